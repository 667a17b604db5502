#!/usr/bin/python3
"""Fetches an account's whole message archive with slixmpp's XEP-0313 plugin, page by page.

Usage: mam.py HOST PORT CAFILE JID PASSWORD [--max N] [--reverse]

Logs in (STARTTLS, trusting exactly CAFILE), checks that the account advertises
urn:xmpp:mam:2, reads the archive metadata, then pages through the archive with RSM (`after`
the last id of the previous page, or `before` the first one with --reverse) until the server
says the page is complete. Prints one line per message, "MSG <id> <body>", in the order
received (oldest first in both directions), one line per page, and PASS at the end. Exits
non-zero on the first failure or after a timeout.
"""
import asyncio
import logging
import os
import ssl
import sys

import slixmpp

TIMEOUT = 30


def main():
    args = sys.argv[1:]
    host, port, cafile, jid, password = args[:5]
    page_max = int(args[args.index("--max") + 1]) if "--max" in args else 10
    reverse = "--reverse" in args
    logging.basicConfig(level=getattr(logging, os.environ.get("SLIX_LOG", "WARNING")),
                        format="%(levelname)s %(name)s %(message)s")
    return asyncio.run(run(host, int(port), cafile, jid, password, page_max, reverse))


def page_done(iq, page, pages):
    """Records one page; returns whether more pages follow (the page is not complete)."""
    fin = iq["mam_fin"]
    lines = []
    for m in iq["mam"]["results"]:
        result = m["mam_result"]
        fwd = result["forwarded"]["stanza"]
        lines.append(f"MSG {result['id']} {fwd['body']}")
    complete = fin.xml.get("complete") in ("true", "1")
    print(f"PAGE {page} items={len(lines)} complete={complete} count={fin['rsm']['count']} "
          f"first={fin['rsm']['first']} last={fin['rsm']['last']}")
    pages.append(lines)
    return not complete


async def run(host, port, cafile, jid, password, page_max, reverse):
    c = slixmpp.ClientXMPP(jid, password)
    c.ssl_context = ssl.create_default_context(cafile=cafile)
    c.ssl_context.check_hostname = False
    for p in ("xep_0030", "xep_0059", "xep_0297", "xep_0313"):
        c.register_plugin(p)
    started = asyncio.Event()
    c.add_event_handler("session_start", lambda _e: started.set())
    c.connect(address=(host, port), force_starttls=True)
    try:
        await asyncio.wait_for(started.wait(), TIMEOUT)
    except asyncio.TimeoutError:
        print(f"FAIL login {jid}")
        return 1
    print(f"ok login {c.boundjid}")
    bare = c.boundjid.bare

    info = await c["xep_0030"].get_info(jid=bare, timeout=TIMEOUT)
    features = info["disco_info"]["features"]
    if "urn:xmpp:mam:2" not in features:
        print(f"FAIL no urn:xmpp:mam:2 in {features}")
        return 1
    print("ok disco urn:xmpp:mam:2")

    meta = await c["xep_0313"].get_archive_metadata(jid=bare, timeout=TIMEOUT)
    print(f"META start={meta['mam_metadata']['start']['id']} end={meta['mam_metadata']['end']['id']}")

    pages = []
    if reverse:
        # The plugin's RSM iterator asks for the last page (an empty <before/>), then the
        # page before the first id of each answer.
        async for iq in c["xep_0313"].retrieve(jid=bare, rsm={"max": page_max}, iterator=True,
                                               reverse=True):
            if not page_done(iq, len(pages), pages):
                break
            if len(pages) > 1000:
                print("FAIL paging never completed")
                return 1
        else:
            print("FAIL the iterator ended before a complete page")
            return 1
    else:
        cursor = None
        for page in range(1000):
            rsm = {"max": page_max}
            if cursor:
                rsm["after"] = cursor
            iq = await c["xep_0313"].retrieve(jid=bare, rsm=rsm, timeout=TIMEOUT)
            if not page_done(iq, page, pages):
                break
            cursor = iq["mam_fin"]["rsm"]["last"]
            if not cursor:
                print("FAIL an incomplete page without a cursor")
                return 1
        else:
            print("FAIL paging never completed")
            return 1
    if reverse:
        pages.reverse()
    for lines in pages:
        for line in lines:
            print(line)

    c.disconnect()
    await asyncio.sleep(0.2)
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
