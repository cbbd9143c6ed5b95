"""zeep against the broker: a client built from the served WSDL runs a NonStop session over the
record service AccountInquiry (Begin, two continues, End), gets the ended session's -1001 fault
and the record's error layout as zeep Faults, and does the same session over the SOAP 1.2 port.

Usage: python3 zeep_client.py <endpoint-url> <work-dir>   (the contract: tests/interop/README.md)
"""

import sys
from decimal import Decimal

from zeep import Client
from zeep.exceptions import Fault
from zeep.plugins import HistoryPlugin

URL = sys.argv[1]
NSK = "urn:compaq_nsk_oss_SoapHeader"
TNS = "urn:soap-broker:soap"
S11 = "http://schemas.xmlsoap.org/soap/envelope/"
S12 = "http://www.w3.org/2003/05/soap-envelope"


class Failed(Exception):
    pass


def check(step, condition, what):
    if not condition:
        raise Failed(f"{step}: {what}")


def reply_session(history, env_ns):
    """The reply's Session header element, or None."""
    header = history.last_received["envelope"].find(f"{{{env_ns}}}Header")
    if header is None:
        return None
    return header.find(f"{{{NSK}}}Session")


def session(service, history, env_ns, prefix):
    """Begin, two continues and End in one session; then the ended session's fault."""
    Session = CLIENT.get_element(f"{{{NSK}}}Session")
    r = service.AccountInquiry(**{"ACCOUNT-NO": 1000000001}, _soapheaders=[Session(SessionCommand="Begin")])
    check(f"{prefix}begin", r.body["HOLDER-NAME"] == "ADA LOVELACE", f"HOLDER-NAME {r.body['HOLDER-NAME']!r}")
    check(f"{prefix}begin", Decimal(r.body["BALANCE"]) == Decimal("1200.00"), f"BALANCE {r.body['BALANCE']!r}")
    sid = r.header.Session.SessionID
    check(f"{prefix}begin", bool(sid), "no SessionID in the reply")
    print(f"ok {prefix}begin session {sid[:6]}…")
    if not prefix:
        r = service.AccountInquiry(**{"ACCOUNT-NO": 1000000002}, _soapheaders=[Session(SessionID=sid)])
        check("continue-1", Decimal(r.body["BALANCE"]) == Decimal("-310.50"), f"BALANCE {r.body['BALANCE']!r}")
        check("continue-1", r.header.Session.SessionID == sid, "another SessionID")
        print("ok continue-1 BALANCE -310.50")
        r = service.AccountInquiry(**{"ACCOUNT-NO": 1000000003, "MAX-TXNS": 0}, _soapheaders=[Session(SessionID=sid)])
        check("continue-2", r.body["TXN-COUNT"] == 0 and r.body["HOLDER-NAME"] == "GRACE HOPPER", f"{r.body}")
        check("continue-2", r.header.Session.SessionID == sid, "another SessionID")
        print("ok continue-2 TXN-COUNT 0")
    r = service.AccountInquiry(
        **{"ACCOUNT-NO": 1000000001}, _soapheaders=[Session(SessionID=sid, SessionCommand="End")]
    )
    check(f"{prefix}end", r.body["REPLY-STATUS"] == "00", f"{r.body}")
    check(f"{prefix}end", reply_session(history, env_ns) is None, "the reply still has a Session header")
    print(f"ok {prefix}end no Session header in the reply")
    step = f"{prefix}fault" if prefix else "unknown-session-fault"
    try:
        service.AccountInquiry(**{"ACCOUNT-NO": 1000000001}, _soapheaders=[Session(SessionID=sid)])
        raise Failed(f"{step}: the ended session was answered")
    except Fault as f:
        code = f.code.split(":")[-1]
        wanted = "Sender" if prefix else "Client.Process"
        check(step, code == wanted, f"faultcode {f.code!r}")
        detail_code = f.detail.find("detailCode")
        check(step, detail_code is not None and detail_code.text == "-1001", f"detail {f.detail!r}")
        print(f"ok {step} zeep.exceptions.Fault {f.code} detailCode -1001")


def main():
    global CLIENT
    history = HistoryPlugin()
    try:
        CLIENT = Client(URL + "?wsdl", plugins=[history])
    except Exception as e:  # noqa: BLE001 - any failure to build the client is the step's
        print(f"FAIL wsdl: {e}")
        return 1
    print("ok wsdl", ", ".join(sorted(CLIENT.wsdl.services)))
    try:
        service11 = CLIENT.bind("SoapService", "SoapSoap11Port")
        session(service11, history, S11, "")
        try:
            service11.AccountInquiry(**{"ACCOUNT-NO": 42})
            raise Failed("record-fault: account 42 was answered")
        except Fault as f:
            check("record-fault", f.code.split(":")[-1] == "Server", f"faultcode {f.code!r}")
            check("record-fault", f.message == "Account inquiry failed", f"faultstring {f.message!r}")
            error = f.detail.find(f"{{{TNS}}}ACCTINQ-ERROR")
            check("record-fault", error is not None, "no ACCTINQ-ERROR in the detail")
            status = error.find(f"{{{TNS}}}ERROR-STATUS")
            check("record-fault", status is not None and status.text == "10", "ERROR-STATUS")
            print("ok record-fault ACCTINQ-ERROR ERROR-STATUS 10")
        session(CLIENT.bind("SoapService", "SoapSoap12Port"), history, S12, "soap12-")
    except Failed as e:
        print(f"FAIL {e}")
        return 1
    except Exception as e:  # noqa: BLE001 - an unexpected toolkit error fails the run
        print(f"FAIL unexpected: {type(e).__name__}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
