"""`storeops db start|stop|status|url`: the embedded local cluster."""

from __future__ import annotations

import json

from runner.cluster import default_cluster


def register(sub) -> None:
    p = sub.add_parser("db", help="manage the embedded local PostgreSQL cluster (start|stop|status|url)")
    dbsub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    start = dbsub.add_parser("start", help="create (if needed) and start the cluster; harmless if running")
    start.set_defaults(func=cmd_start)
    dbsub.add_parser("stop", help="stop the cluster").set_defaults(func=cmd_stop)
    status = dbsub.add_parser("status", help="say whether the cluster runs, where, and on which port")
    status.add_argument("--json", action="store_true", help="print machine-readable JSON")
    status.set_defaults(func=cmd_status)
    dbsub.add_parser("url", help="print the cluster's connection URL").set_defaults(func=cmd_url)


def cmd_start(args) -> int:
    cluster = default_cluster()
    started = cluster.start()
    print(f"{'started' if started else 'already running'}: {cluster.url()} (data {cluster.datadir})")
    return 0


def cmd_stop(args) -> int:
    cluster = default_cluster()
    print("stopped" if cluster.stop() else "not running")
    return 0


def cmd_status(args) -> int:
    cluster = default_cluster()
    info = cluster.status()
    if args.json:
        print(json.dumps(info))
    else:
        state = f"running (pid {info['pid']})" if info["running"] else "stopped"
        print(f"{state}\nurl:     {info['url']}\ndata:    {info['datadir']}\nsockets: {info['socket_dir']}\n"
              f"pg_cron: {'available' if info['pg_cron'] else 'not installed'}")
    return 0 if info["running"] else 3


def cmd_url(args) -> int:
    print(default_cluster().url())
    return 0
