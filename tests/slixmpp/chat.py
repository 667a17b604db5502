#!/usr/bin/python3
"""Two real slixmpp clients against a Relais server.

Usage: chat.py HOST PORT CAFILE ALICE_JID ALICE_PW BOB_JID BOB_PW [--direct-tls] [--mech MECH]
               [--tls12] [--expect-mech MECH] [--bob-port PORT]

With --bob-port, Bob connects to that port (another edge of a cluster) and Alice to PORT.

Alice logs in, adds Bob to her roster and asks to subscribe; Bob accepts and subscribes back;
then they exchange messages both ways, and Alice sets and reads back her vCard. Prints one
line per checked step and exits non-zero on the first failure or after a timeout.
"""
import asyncio
import logging
import ssl
import sys

import slixmpp

TIMEOUT = 30


def main():
    args = sys.argv[1:]
    direct = "--direct-tls" in args
    tls12 = "--tls12" in args
    mech = expect = None
    if "--mech" in args:
        mech = args[args.index("--mech") + 1]
    if "--expect-mech" in args:
        expect = args[args.index("--expect-mech") + 1]
    bob_port = None
    if "--bob-port" in args:
        bob_port = int(args[args.index("--bob-port") + 1])
    host, port, cafile, alice_jid, alice_pw, bob_jid, bob_pw = args[:7]
    logging.basicConfig(level=getattr(logging, __import__("os").environ.get("SLIX_LOG","WARNING")), format="%(levelname)s %(name)s %(message)s")
    return asyncio.run(run(host, int(port), cafile, alice_jid, alice_pw, bob_jid, bob_pw, direct, mech, tls12, expect, bob_port))


def make(jid, password, cafile, mech, tls12):
    c = slixmpp.ClientXMPP(jid, password, sasl_mech=mech)
    # Trust exactly the server's generated certificate (no hostname on loopback).
    c.ssl_context = ssl.create_default_context(cafile=cafile)
    c.ssl_context.check_hostname = False
    if tls12:
        c.ssl_context.maximum_version = ssl.TLSVersion.TLSv1_2
    c.register_plugin("xep_0030")
    c.register_plugin("xep_0054")
    c.register_plugin("xep_0199")
    c.auto_authorize = True
    c.auto_subscribe = True
    return c


async def run(host, port, cafile, alice_jid, alice_pw, bob_jid, bob_pw, direct, mech, tls12, expect, bob_port=None):
    alice = make(alice_jid, alice_pw, cafile, mech, tls12)
    bob = make(bob_jid, bob_pw, cafile, mech, tls12)
    for c in (alice, bob):
        c.auth_failed = asyncio.get_running_loop().create_future()
        c.add_event_handler("failed_all_auth", lambda _e, c=c: c.auth_failed.done() or c.auth_failed.set_result(True))

    got = {"alice": asyncio.Queue(), "bob": asyncio.Queue()}
    alice.add_event_handler("message", lambda m: got["alice"].put_nowait(m))
    bob.add_event_handler("message", lambda m: got["bob"].put_nowait(m))
    alice_sees_bob = asyncio.Event()
    bob_sees_alice = asyncio.Event()
    alice.add_event_handler("got_online", lambda p: p["from"].bare == bob_jid and alice_sees_bob.set())
    bob.add_event_handler("got_online", lambda p: p["from"].bare == alice_jid and bob_sees_alice.set())

    for c in (alice, bob):
        started = asyncio.Event()
        c.add_event_handler("session_start", lambda _e, s=started: s.set())
        c_port = bob_port if (c is bob and bob_port) else port
        c.connect(address=(host, c_port), use_ssl=direct, force_starttls=not direct)
        done, _ = await asyncio.wait(
            [asyncio.ensure_future(started.wait()), c.auth_failed], timeout=TIMEOUT,
            return_when=asyncio.FIRST_COMPLETED)
        if not started.is_set():
            print(f"FAIL login {c.boundjid}")
            return 1
        c.send_presence()
        await c.get_roster()
        used = c["feature_mechanisms"].mech.name if c["feature_mechanisms"].mech else "?"
        version = c.socket.version() if hasattr(c.socket, "version") else "?"
        print(f"ok login {c.boundjid} mech={used} tls={version}")
        if expect and used != expect:
            print(f"FAIL expected mechanism {expect}, got {used}")
            return 1

    alice.update_roster(bob_jid, name="Bob")
    alice.send_presence_subscription(pto=bob_jid)
    await asyncio.wait_for(alice_sees_bob.wait(), TIMEOUT)
    print("ok alice sees bob online")
    await asyncio.wait_for(bob_sees_alice.wait(), TIMEOUT)
    print("ok bob sees alice online")
    sub = alice.client_roster[bob_jid]["subscription"]
    if sub != "both":
        print(f"FAIL alice's roster says subscription={sub}")
        return 1
    print("ok subscription both")

    alice.send_message(mto=bob_jid, mbody="hello bob", mtype="chat")
    m = await asyncio.wait_for(got["bob"].get(), TIMEOUT)
    if m["body"] != "hello bob" or m["from"].bare != alice_jid:
        print(f"FAIL bob got {m}")
        return 1
    print("ok bob got the message")
    bob.send_message(mto=m["from"], mbody="hi alice", mtype="chat")
    m = await asyncio.wait_for(got["alice"].get(), TIMEOUT)
    if m["body"] != "hi alice":
        print(f"FAIL alice got {m}")
        return 1
    print("ok alice got the reply")

    vcard = alice["xep_0054"].make_vcard()
    vcard["FN"] = "Alice Example"
    await alice["xep_0054"].publish_vcard(vcard, timeout=TIMEOUT)
    got_vcard = await bob["xep_0054"].get_vcard(alice_jid, cached=False, timeout=TIMEOUT)
    if got_vcard["vcard_temp"]["FN"] != "Alice Example":
        print(f"FAIL vcard {got_vcard}")
        return 1
    print("ok vcard")
    info = await alice["xep_0030"].get_info(jid=alice.boundjid.domain, timeout=TIMEOUT)
    if "urn:xmpp:ping" not in info["disco_info"]["features"]:
        print(f"FAIL disco {info}")
        return 1
    print("ok disco")
    rtt = await alice["xep_0199"].ping(jid=alice.boundjid.domain, timeout=TIMEOUT)
    print(f"ok ping {rtt:.4f}s")

    for c in (alice, bob):
        c.disconnect()
    await asyncio.sleep(0.2)
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
