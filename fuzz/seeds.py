#!/usr/bin/env python3
"""Writes the seed corpus (fuzz/corpus/<target>/seed-*) from the project's own test vectors:
the stream transcript of services/xmpp/src/parser.rs, the JIDs of jid.rs, the RFC 5802 and
RFC 7677 SCRAM exchanges of scram.rs, the PLAIN messages of edge/src/sasl.rs and the XEP
examples of services/xmpp/src/xep/. Run it again after changing a vector; files the fuzzer
added (crash regressions, named after what they found) are left alone."""
import base64
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' "
          "xml:lang='en'>")
SHORT = ("<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
         "xmlns='jabber:client'>")

TRANSCRIPT = ("\ufeff" + HEADER
    + "\n  <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\n "
    + "<auth xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\" mechanism='SCRAM-SHA-1'>"
      "biwsbj1qdWxpZXQscj1vTXNUQUF3QUFBQU1BQUFBTlAwVEFBQUFBQUJQVTBBQQ==</auth>"
    + "<iq type='set' id='bind_1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
      "<resource>balcony</resource></bind></iq> \t\r\n"
    + "<message to='romeo@example.net' type='chat' xml:lang='en' id='a&amp;b&#x27;c'>"
      "<body>Wherefore art thou, \u0420\u043e\u043c\u0435\u043e? &lt;3 &amp; caf&#xE9; &#233;\r\nline2\rline3</body>"
      "<x:delay xmlns:x='urn:xmpp:delay' stamp='2002-09-10T23:08:25Z'/>"
      "<thread>t1</thread ></message>"
    + "<presence><show>away</show><status>in a &quot;meeting&quot; \U0001F600</status>"
      "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v'/>"
      "<x xmlns=''><![CDATA[<cdata & stuff>]]></x></presence>"
    + "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'><item jid='a@b' "
      "name='A\tB\nC' note=\"1>0 '\"/></query></iq>"
    + "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
    + "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
      "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>gone</text></stream:error>"
    + "  </stream:stream>trailing <garbage & stuff")

MAM = "urn:xmpp:mam:2"
XDATA = "jabber:x:data"
RSM = "http://jabber.org/protocol/rsm"

XEP = {
    "ping": "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
    "version": "<query xmlns='jabber:iq:version'><name>Relais</name><version>0.1.0</version><os>Linux</os></query>",
    "time": "<time xmlns='urn:xmpp:time'><tzo>-06:00</tzo><utc>2006-12-19T17:58:35Z</utc></time>",
    "delay": "<delay xmlns='urn:xmpp:delay' from='example.com' stamp='2026-11-20T23:58:11.123Z'>Offline</delay>",
    "disco-info": "<query xmlns='http://jabber.org/protocol/disco#info' node='n'><identity category='server' type='im' name='Relais'/><feature var='urn:xmpp:ping'/><feature var='jabber:iq:version'/></query>",
    "disco-items": "<query xmlns='http://jabber.org/protocol/disco#items'><item jid='conference.example.com' name='Rooms'/><item jid='pubsub.example.com' node='n1'/></query>",
    "stanza-id": "<message><stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.example.com' id='0G8Y3K5RZTQ3C'/><origin-id xmlns='urn:xmpp:sid:0' id='de305d54-75b4-431b-adb2-eb6b9e546013'/></message>",
    "rsm": "<set xmlns='%s'><max>10</max><before/><after>09af3-cc343-b409f</after><index>0</index><count>800</count><first index='0'>a</first><last>b</last></set>" % RSM,
    "data-form": "<x xmlns='%s' type='form'><title>T</title><instructions>I</instructions><field var='FORM_TYPE' type='hidden'><value>%s</value></field><field var='with' type='jid-single' label='With'><value>juliet@capulet.lit</value></field><field var='ids' type='text-multi'><value>a</value><value>b</value></field></x>" % (XDATA, MAM),
    "mam-query": "<iq type='set' id='q'><query xmlns='%s' queryid='f27'><x xmlns='%s' type='submit'><field var='FORM_TYPE' type='hidden'><value>%s</value></field><field var='with'><value>juliet@capulet.lit</value></field><field var='start'><value>2010-06-07T00:00:00Z</value></field><field var='end'><value>2010-07-07T13:23:54Z</value></field><field var='before-id'><value>B</value></field><field var='after-id'><value>A</value></field><field var='ids'><value>X</value><value>Y</value></field></x><set xmlns='%s'><max>10</max><before/></set><flip-page/></query></iq>" % (MAM, XDATA, MAM, RSM),
    "mam-result": "<message id='aeb213' to='juliet@capulet.lit/chamber'><result xmlns='%s' queryid='f27' id='28482-98726-73623'><forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='2010-07-10T23:08:25Z'/><message xmlns='jabber:client' to='juliet@capulet.lit/balcony' from='romeo@montague.lit/orchard' type='chat'><body>Call me but love, and I'll be new baptized; Henceforth I never will be Romeo.</body></message></forwarded></result></message>" % MAM,
    "mam-fin": "<iq type='result' id='q'><fin xmlns='%s' complete='true' stable='false'><set xmlns='%s'><first index='0'>28482-98726-73623</first><last>09af3-cc343-b409f</last><count>20</count></set></fin></iq>" % (MAM, RSM),
    "mam-prefs": "<prefs xmlns='%s' default='roster'><always><jid>romeo@montague.lit</jid></always><never><jid>montague@montague.lit</jid></never></prefs>" % MAM,
    "mam-metadata": "<metadata xmlns='%s'><start id='YWxwaGEg' timestamp='2008-08-22T21:09:04Z'/><end id='b21lZ2Eg' timestamp='2020-04-20T14:34:21Z'/></metadata>" % MAM,
    "forwarded": "<forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='2010-07-10T23:08:25Z'/><message xmlns='jabber:client' from='romeo@montague.lit/orchard' to='juliet@capulet.lit/balcony' type='chat'><body>Hi</body></message></forwarded>",
}

JIDS = ["alice@example.com", "Alice@Example.COM/Res", "a@example.com./r", "a@b/c/d@e",
        "a@b/ x y ", "\uff21\uff22@example.com", "juliet@xn--bcher-kva.example",
        "juliet@B\u00dcCHER.example", "a@192.168.0.1", "a@[::1]/r", "a@[2001:DB8:0:0:0:0:0:1]",
        "@d", "a@", "a@d/", "a@d..", "a@[::1", "a\"b@d", "a@b@c", "a@d/r\u0000", "example.com"]

SCRAM = [  # (mode, client-first, client-final, server-first, server-final); mode bit 0: SHA-256
    (0, "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
     "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
     "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
     "v=rmF9pqV8S7suAoZWja4dJRkFsKQ="),
    (1, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
     "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
     "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
     "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
]


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def main():
    t = TRANSCRIPT.encode()
    for sel in range(3):
        write("stream_parser", "transcript-%d" % sel, bytes([sel, 17 * sel + 3]) + t)
    for name, xml in XEP.items():
        write("stream_parser", "xep-" + name, bytes([2, 5]) + (SHORT + xml + "</stream:stream>").encode())
        write("xep", name, xml)
    for i, j in enumerate(JIDS):
        write("jid", "%02d" % i, j)
    for mode, cf, cfinal, sf, sfinal in SCRAM:
        h = "sha256" if mode else "sha1"
        write("scram_server", h + "-known", bytes([mode | 8]) + (cf + "\n" + cfinal).encode())
        write("scram_server", h + "-unknown", bytes([mode]) + (cf + "\n" + cfinal).encode())
        write("scram_server", h + "-authzid", bytes([mode | 8]) + ("y,a=user@example.com,n=us=2Cer,r=abc\nc=eSxhPXVzZXJAZXhhbXBsZS5jb20s,r=abc3rfcNHYJY1ZVvWVs7j,p=AAAA").encode())
        write("scram_server", h + "-plus", bytes([mode | 2 | 8]) + ("p=tls-exporter,,n=user,r=abc\nc=cD10bHMtZXhwb3J0ZXIsLAcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=,r=abc3rfcNHYJY1ZVvWVs7j,p=AAAA").encode())
        write("scram_server", h + "-differential", bytes([mode | 16]) + b"user\nfyko+d2lbbFgONRv9qkxdawL\n\x00\x00\x01")
        write("scram_server", h + "-differential-plus", bytes([mode | 2 | 16]) + b"us,er\nrOprNGfwEbeRWgbNEkqO\n")
        write("scram_client", h, bytes([mode]) + (sf + "\n" + sfinal).encode())
        cheap = sf.replace("i=4096", "i=1")
        write("scram_client", h + "-cheap", bytes([mode]) + (cheap + "\n" + sfinal).encode())
        write("scram_client", h + "-plus-cheap", bytes([mode | 2]) + (cheap + "\ne=other-error").encode())
    for i, (raw) in enumerate([b"\0alice\0secret", b"alice@x\0alice\0s", b"alice\0secret",
                               b"\0\0secret", b"\0a\0b\0c", b"\0a\xff\0b"]):
        write("plain", "raw-%d" % i, b"\0" + raw)
        write("plain", "b64-%d" % i, b"\x01" + base64.b64encode(raw))
    write("plain", "b64-empty", b"\x01=")


main()
