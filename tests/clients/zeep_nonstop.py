#!/usr/bin/env python3
"""A real third-party SOAP client (zeep) driving a NonStop session through the broker.

Usage: zeep_nonstop.py URL        (URL of the broker's /soap endpoint)

Writes a small document/literal WSDL (operation Echo: Echo{text} -> EchoResponse{text}) whose
address is URL into a temporary file, then with zeep:

  1. Begin: Echo with a raw lxml <Session SessionCommand="Begin"/> header; reads SessionID from the
     reply's Session header through zeep's HistoryPlugin;
  2. continues the session with SessionID (the reply must echo it);
  3. ends it (the reply must carry no Session header);
  4. sends an unknown SessionID and catches zeep.exceptions.Fault, printing its code, message and
     the detailCode from its detail.

Prints one line per finding; exits 0 when everything matched, 1 on a mismatch (with the reason on
stderr), 3 when zeep is not installed.
"""

import os
import sys
import tempfile

try:
    import zeep
    from zeep import Client, Settings
    from zeep.exceptions import Fault
    from zeep.plugins import HistoryPlugin
    from zeep.transports import Transport
    from lxml import etree
    import requests
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"zeep is not installed for {sys.executable} ({e}); run scripts/test.sh, which installs it",
          file=sys.stderr)
    sys.exit(3)

S11 = "http://schemas.xmlsoap.org/soap/envelope/"
NSK = "urn:compaq_nsk_oss_SoapHeader"
TNS = "urn:example:echo"

WSDL = """<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"
    xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema"
    xmlns:tns="urn:example:echo" targetNamespace="urn:example:echo" name="EchoService">
  <wsdl:types>
    <xsd:schema targetNamespace="urn:example:echo" elementFormDefault="qualified">
      <xsd:element name="Echo">
        <xsd:complexType><xsd:sequence><xsd:element name="text" type="xsd:string"/></xsd:sequence></xsd:complexType>
      </xsd:element>
      <xsd:element name="EchoResponse">
        <xsd:complexType><xsd:sequence><xsd:element name="text" type="xsd:string"/></xsd:sequence></xsd:complexType>
      </xsd:element>
    </xsd:schema>
  </wsdl:types>
  <wsdl:message name="EchoIn"><wsdl:part name="parameters" element="tns:Echo"/></wsdl:message>
  <wsdl:message name="EchoOut"><wsdl:part name="parameters" element="tns:EchoResponse"/></wsdl:message>
  <wsdl:portType name="EchoPortType">
    <wsdl:operation name="Echo"><wsdl:input message="tns:EchoIn"/><wsdl:output message="tns:EchoOut"/></wsdl:operation>
  </wsdl:portType>
  <wsdl:binding name="EchoBinding" type="tns:EchoPortType">
    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <wsdl:operation name="Echo">
      <soap:operation soapAction="urn:example:echo#Echo"/>
      <wsdl:input><soap:body use="literal"/></wsdl:input>
      <wsdl:output><soap:body use="literal"/></wsdl:output>
    </wsdl:operation>
  </wsdl:binding>
  <wsdl:service name="EchoService">
    <wsdl:port name="EchoPort" binding="tns:EchoBinding"><soap:address location="{url}"/></wsdl:port>
  </wsdl:service>
</wsdl:definitions>
"""


class Mismatch(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Mismatch(what)


def session_header(**attrs):
    """A raw <nsk:Session .../> header element with the given attributes."""
    el = etree.Element(f"{{{NSK}}}Session", nsmap={"nsk": NSK})
    for k, v in attrs.items():
        el.set(k, v)
    return el


def reply_session(history):
    """The Session header of the last reply as a dict of attributes, or None."""
    env = history.last_received["envelope"]
    header = env.find(f"{{{S11}}}Header")
    if header is None:
        return None
    for h in header:
        if etree.QName(h).namespace in (NSK, NSK + "/") and etree.QName(h).localname == "Session":
            return dict(h.attrib)
    return None


def text_of(result):
    """zeep returns the single child's value or an object with .text; accept both."""
    if isinstance(result, str):
        return result
    try:
        return result["text"]
    except (TypeError, KeyError):
        return getattr(result, "text", None)


def expect_fault(call, label):
    try:
        result = call()
    except Fault as f:
        detail_code = None
        if f.detail is not None:
            dc = f.detail.find("detailCode")
            if dc is None:
                dc = f.detail.find(".//{*}detailCode")
            detail_code = None if dc is None else (dc.text or "").strip()
        print(f"{label}: FAULT code={f.code}")
        print(f"{label}: FAULT message={f.message}")
        print(f"{label}: FAULT detailCode={detail_code}")
        return f, detail_code
    raise Mismatch(f"{label}: expected a zeep Fault, got {result!r}")


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    url = sys.argv[1]
    print(f"zeep {zeep.__version__} on {sys.executable}")
    with tempfile.TemporaryDirectory(prefix="zeep-nonstop-") as d:
        wsdl = os.path.join(d, "echo.wsdl")
        with open(wsdl, "w", encoding="utf-8") as fh:
            fh.write(WSDL.replace("{url}", url))
        history = HistoryPlugin()
        session = requests.Session()
        session.trust_env = False          # loopback only: never through an HTTP proxy from the environment
        client = Client(wsdl, plugins=[history], settings=Settings(strict=True),
                        transport=Transport(session=session, timeout=30, operation_timeout=30))

        # 1. Begin, with a body.
        res = client.service.Echo(text="hello from zeep", _soapheaders=[session_header(SessionCommand="Begin")])
        check(text_of(res) == "hello from zeep", f"Begin: echo text {text_of(res)!r}")
        sess = reply_session(history)
        check(sess is not None and sess.get("SessionID"), f"Begin: no SessionID in the reply header ({sess!r})")
        sid = sess["SessionID"]
        print(f"begin: SessionID={sid}")

        # 2. Continue.
        res = client.service.Echo(text="second", _soapheaders=[session_header(SessionID=sid)])
        check(text_of(res) == "second", f"continue: echo text {text_of(res)!r}")
        sess = reply_session(history)
        check(sess is not None and sess.get("SessionID") == sid, f"continue: SessionID not echoed ({sess!r})")
        print("continue: SessionID echoed")

        # 3. End, with a body.
        res = client.service.Echo(text="bye", _soapheaders=[session_header(SessionID=sid, SessionCommand="End")])
        check(text_of(res) == "bye", f"End: echo text {text_of(res)!r}")
        check(reply_session(history) is None, "End: the reply still carries a Session header")
        print("end: no Session header")

        # 4. An unknown SessionID.
        f, code = expect_fault(
            lambda: client.service.Echo(text="x", _soapheaders=[session_header(SessionID="0" * 32)]), "unknown")
        check(f.code == "SOAP-ENV:Client.Process", f"unknown: fault code {f.code!r}")
        check(f.message == "Error processing the header of XML document", f"unknown: fault message {f.message!r}")
        check(code == "-1001", f"unknown: detailCode {code!r}")

        # 5. The ended session is unknown too.
        f, code = expect_fault(
            lambda: client.service.Echo(text="x", _soapheaders=[session_header(SessionID=sid)]), "ended")
        check(code == "-1001", f"ended: detailCode {code!r}")
    print("OK")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Mismatch as m:
        print(f"MISMATCH: {m}", file=sys.stderr)
        sys.exit(1)
