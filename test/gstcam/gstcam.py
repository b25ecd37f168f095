#!/usr/bin/env python3
"""A real RTSP camera for Porthole's tests: GStreamer's gst-rtsp-server
serving a test pattern as H.264 (x264enc) at rtsp://127.0.0.1:PORT/PATH.

Usage: gstcam.py --port N [--path /live] [--width 320 --height 240 --fps 15]
                 [--bitrate 500] [--user U --password P] [--sub-path /sub]

One shared media pipeline serves every client (the camera's encoder runs
once). Prints one line per event on stdout, flushed:
  listening 127.0.0.1:PORT
  client-connected IP:PORT
  client-closed IP:PORT
Tests count client-connected lines to tell how many RTSP connections the
camera saw. Exits on SIGTERM/SIGINT.
"""
import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def say(*words):
    print(*words, flush=True)


def factory(args, width, height):
    f = GstRtspServer.RTSPMediaFactory()
    f.set_launch(
        "( videotestsrc is-live=true pattern=ball ! "
        f"video/x-raw,width={width},height={height},framerate={args.fps}/1 ! "
        f"x264enc tune=zerolatency speed-preset=ultrafast bitrate={args.bitrate} key-int-max={args.fps} ! "
        "video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    f.set_shared(True)
    if args.user:
        perms = GstRtspServer.RTSPPermissions()
        perms.add_permission_for_role("viewer", "media.factory.access", True)
        perms.add_permission_for_role("viewer", "media.factory.construct", True)
        f.set_permissions(perms)
    return f


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/live")
    p.add_argument("--sub-path", default="")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--bitrate", type=int, default=500, help="kbit/s")
    p.add_argument("--user", default="")
    p.add_argument("--password", default="")
    args = p.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    mounts.add_factory(args.path, factory(args, args.width, args.height))
    if args.sub_path:
        mounts.add_factory(args.sub_path, factory(args, args.width // 2, args.height // 2))
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "viewer")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)

    def on_client(_server, client):
        conn = client.get_connection()
        peer = f"{conn.get_ip()}" if conn else "?"
        say("client-connected", peer)
        client.connect("closed", lambda _c: say("client-closed", peer))

    server.connect("client-connected", on_client)
    if server.attach(None) == 0:
        say("error: cannot listen on 127.0.0.1:%d" % args.port)
        sys.exit(1)
    say("listening 127.0.0.1:%d" % args.port)

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    loop.run()


if __name__ == "__main__":
    main()
