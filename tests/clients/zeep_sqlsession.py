#!/usr/bin/env python3
"""A real third-party SOAP client (zeep) running a whole SQL Server-style session through the
broker's sqlSession endpoint.

Usage: zeep_sqlsession.py URL USER PASSWORD     (URL of the broker's /sql endpoint)

Writes a document/literal WSDL for `sqlbatch` in SQL Server's namespaces (BatchCommands, Parameters
of SqlParameter with name/sqlDbType attributes; the result stream left open as xsd:any) whose
address is URL, then with zeep over HTTP Basic:

  1. initiate: sqlbatch with a raw lxml <sqlSession initiate="true" timeout="30"/> header, creating
     a temporary table and inserting a parameter into it; reads sessionId and timeout from the reply
     header through zeep's HistoryPlugin;
  2. use: reads the temporary table back in the same session (the reply must echo the header);
  3. terminate: the reply header must say terminate="true" with the same sessionId;
  4. uses the ended session and catches zeep.exceptions.Fault (SessionIdIsInvalid).

Prints one line per finding; exits 0 when everything matched, 1 on a mismatch (with the reason on
stderr), 3 when zeep is not installed.
"""

import os
import sys
import tempfile

try:
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

OPTIONS = "http://schemas.microsoft.com/sqlserver/2004/SOAP/Options"
SQL = "http://schemas.microsoft.com/sqlserver/2004/SOAP"
PARAM = "http://schemas.microsoft.com/sqlserver/2004/SOAP/types/SqlParameter"
STREAM = "http://schemas.microsoft.com/sqlserver/2004/SOAP/types/SqlResultStream"

WSDL = """<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"
    xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema"
    xmlns:sql="http://schemas.microsoft.com/sqlserver/2004/SOAP"
    xmlns:sqlparameter="http://schemas.microsoft.com/sqlserver/2004/SOAP/types/SqlParameter"
    targetNamespace="http://schemas.microsoft.com/sqlserver/2004/SOAP" name="sql_endpoint">
  <wsdl:types>
    <xsd:schema targetNamespace="http://schemas.microsoft.com/sqlserver/2004/SOAP/types/SqlParameter"
        elementFormDefault="qualified">
      <xsd:complexType name="SqlParameter">
        <xsd:sequence><xsd:element name="Value" type="xsd:string" nillable="true"/></xsd:sequence>
        <xsd:attribute name="name" type="xsd:string" use="required"/>
        <xsd:attribute name="sqlDbType" type="xsd:string"/>
      </xsd:complexType>
      <xsd:complexType name="ArrayOfSqlParameter">
        <xsd:sequence>
          <xsd:element name="SqlParameter" type="sqlparameter:SqlParameter" minOccurs="0" maxOccurs="unbounded"/>
        </xsd:sequence>
      </xsd:complexType>
    </xsd:schema>
    <xsd:schema targetNamespace="http://schemas.microsoft.com/sqlserver/2004/SOAP" elementFormDefault="qualified">
      <xsd:import namespace="http://schemas.microsoft.com/sqlserver/2004/SOAP/types/SqlParameter"/>
      <xsd:element name="sqlbatch">
        <xsd:complexType><xsd:sequence>
          <xsd:element name="BatchCommands" type="xsd:string"/>
          <xsd:element name="Parameters" type="sqlparameter:ArrayOfSqlParameter" minOccurs="0"/>
        </xsd:sequence></xsd:complexType>
      </xsd:element>
      <xsd:element name="sqlbatchResponse">
        <xsd:complexType><xsd:sequence>
          <xsd:element name="sqlbatchResult"><xsd:complexType><xsd:sequence>
            <xsd:any processContents="skip" minOccurs="0" maxOccurs="unbounded" namespace="##any"/>
          </xsd:sequence></xsd:complexType></xsd:element>
        </xsd:sequence></xsd:complexType>
      </xsd:element>
    </xsd:schema>
  </wsdl:types>
  <wsdl:message name="sqlbatchIn"><wsdl:part name="parameters" element="sql:sqlbatch"/></wsdl:message>
  <wsdl:message name="sqlbatchOut"><wsdl:part name="parameters" element="sql:sqlbatchResponse"/></wsdl:message>
  <wsdl:portType name="sqlPortType">
    <wsdl:operation name="sqlbatch"><wsdl:input message="sql:sqlbatchIn"/><wsdl:output message="sql:sqlbatchOut"/></wsdl:operation>
  </wsdl:portType>
  <wsdl:binding name="sqlBinding" type="sql:sqlPortType">
    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <wsdl:operation name="sqlbatch">
      <soap:operation soapAction="http://schemas.microsoft.com/sqlserver/2004/SOAP/sqlbatch"/>
      <wsdl:input><soap:body use="literal"/></wsdl:input>
      <wsdl:output><soap:body use="literal"/></wsdl:output>
    </wsdl:operation>
  </wsdl:binding>
  <wsdl:service name="sql_endpoint">
    <wsdl:port name="sql" binding="sql:sqlBinding"><soap:address location="{url}"/></wsdl:port>
  </wsdl:service>
</wsdl:definitions>
"""


class Mismatch(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Mismatch(what)


def header(**attrs):
    h = etree.Element(f"{{{OPTIONS}}}sqlSession", nsmap={"sqloptions": OPTIONS})
    for k, v in attrs.items():
        h.set(k, v)
    return h


def reply_session(history):
    env = history.last_received["envelope"]
    found = env.findall(f".//{{{OPTIONS}}}sqlSession")
    check(len(found) == 1, f"one sqlSession header in the reply, found {len(found)}")
    return found[0]


def values(history, column):
    env = history.last_received["envelope"]
    return [e.text for e in env.iter() if etree.QName(e).localname == column]


def main():
    url, user, password = sys.argv[1], sys.argv[2], sys.argv[3]
    with tempfile.NamedTemporaryFile("w", suffix=".wsdl", delete=False) as f:
        f.write(WSDL.replace("{url}", url))
        wsdl = f.name
    try:
        session = requests.Session()
        session.auth = (user, password)
        history = HistoryPlugin()
        client = Client(wsdl, transport=Transport(session=session, timeout=30),
                        plugins=[history], settings=Settings(strict=False))

        client.service.sqlbatch(
            BatchCommands="CREATE TEMP TABLE zeep_scratch (word TEXT); INSERT INTO zeep_scratch VALUES (@w)",
            Parameters={"SqlParameter": [{"name": "w", "sqlDbType": "NVarChar", "Value": "kept"}]},
            _soapheaders=[header(initiate="true", timeout="30")])
        h = reply_session(history)
        sid = h.get("sessionId")
        check(sid, "initiate: a sessionId")
        check(h.get("timeout") == "30", f"initiate: timeout 30, got {h.get('timeout')}")
        print("initiate: sessionId received, timeout=30")

        client.service.sqlbatch(BatchCommands="SELECT word FROM zeep_scratch",
                                _soapheaders=[header(sessionId=sid)])
        check(reply_session(history).get("sessionId") == sid, "use: the header is echoed")
        words = values(history, "word")
        check(words == ["kept"], f"use: the temporary table read back, got {words}")
        print("use: word=kept")

        client.service.sqlbatch(BatchCommands="SELECT 1", _soapheaders=[header(sessionId=sid, terminate="true")])
        h = reply_session(history)
        check(h.get("terminate") == "true" and h.get("sessionId") == sid, "terminate: acknowledged")
        print("terminate: acknowledged")

        try:
            client.service.sqlbatch(BatchCommands="SELECT 1", _soapheaders=[header(sessionId=sid)])
            raise Mismatch("ended: expected a fault")
        except Fault as fault:
            check("SessionIdIsInvalid" in (fault.message or ""), f"ended: SessionIdIsInvalid, got {fault.message!r}")
            print(f"ended: FAULT code={fault.code} SessionIdIsInvalid")
        print("OK")
        return 0
    except Mismatch as m:
        print(f"mismatch: {m}", file=sys.stderr)
        if history.last_received is not None:
            print(etree.tostring(history.last_received["envelope"]).decode(), file=sys.stderr)
        return 1
    finally:
        os.unlink(wsdl)


if __name__ == "__main__":
    sys.exit(main())
