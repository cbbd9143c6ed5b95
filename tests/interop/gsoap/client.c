/* gSOAP (C) interop client for the soap-broker, built by run.sh from the served WSDL
 * (wsdl2h -c + soapcpp2 -c, prefixes pinned by typemap.dat: tns = urn:soap-broker:soap,
 * nsk = urn:compaq_nsk_oss_SoapHeader).
 *
 * Proves that gSOAP's generated stubs can drive the record service AccountInquiry with the
 * NonStop Session header over SOAP 1.1 (soap_call___tns__AccountInquiry, SoapSoap11Binding)
 * and SOAP 1.2 (soap_call___tns__AccountInquiry_, SoapSoap12Binding): begin / continue / end a
 * session, read the reply Session header from soap->header, and receive the broker's faults
 * as gSOAP faults (soap->fault) with their codes and details: detailCode -1001 (from the raw
 * detail XML, see detail_code) and the typed tns:ACCTINQ-ERROR with ERROR-STATUS 10.
 * Steps and output follow tests/interop/README.md.  GSOAP_TRACE=1 copies the wire to stderr.
 *
 * Usage: client <endpoint-url>
 */
#include "soapH.h"
#include <stdlib.h>
#include <string.h>

/* Our own namespace tables instead of the generated nsmap: wsdl2h puts the SOAP 1.2 envelope
 * first there (the WSDL has a soap12 binding), which would make every call SOAP 1.2. */
struct Namespace namespaces[] = { /* SOAP 1.1 */
    {"SOAP-ENV", "http://schemas.xmlsoap.org/soap/envelope/", "http://www.w3.org/*/soap-envelope", NULL},
    {"SOAP-ENC", "http://schemas.xmlsoap.org/soap/encoding/", "http://www.w3.org/*/soap-encoding", NULL},
    {"xsi", "http://www.w3.org/2001/XMLSchema-instance", "http://www.w3.org/*/XMLSchema-instance", NULL},
    {"xsd", "http://www.w3.org/2001/XMLSchema", "http://www.w3.org/*/XMLSchema", NULL},
    {"nsk", "urn:compaq_nsk_oss_SoapHeader", NULL, NULL},
    {"tns", "urn:soap-broker:soap", NULL, NULL},
    {NULL, NULL, NULL, NULL}};
static struct Namespace ns12[] = {
    {"SOAP-ENV", "http://www.w3.org/2003/05/soap-envelope", "http://schemas.xmlsoap.org/soap/envelope/", NULL},
    {"SOAP-ENC", "http://www.w3.org/2003/05/soap-encoding", "http://schemas.xmlsoap.org/soap/encoding/", NULL},
    {"xsi", "http://www.w3.org/2001/XMLSchema-instance", "http://www.w3.org/*/XMLSchema-instance", NULL},
    {"xsd", "http://www.w3.org/2001/XMLSchema", "http://www.w3.org/*/XMLSchema", NULL},
    {"nsk", "urn:compaq_nsk_oss_SoapHeader", NULL, NULL},
    {"tns", "urn:soap-broker:soap", NULL, NULL},
    {NULL, NULL, NULL, NULL}};

static const char *endpoint;
static const char *step;
static char buf[2048];

#define FAIL(...) do { snprintf(buf, sizeof buf, __VA_ARGS__); \
    printf("FAIL %s: %s\n", step, buf); exit(1); } while (0)

/* --- optional wire trace ------------------------------------------------------------- */
static int (*orig_fsend)(struct soap *, const char *, size_t);
static size_t (*orig_frecv)(struct soap *, char *, size_t);
static int trace_send(struct soap *s, const char *b, size_t n)
{ fwrite(b, 1, n, stderr); return orig_fsend(s, b, n); }
static size_t trace_recv(struct soap *s, char *b, size_t n)
{ size_t r = orig_frecv(s, b, n); fwrite(b, 1, r, stderr); return r; }

/* --- helpers ------------------------------------------------------------------------- */
static const char *nz(const char *s) { return s ? s : "(null)"; }

static const char *local(const char *qname) /* "SOAP-ENV:Client.Process" -> "Client.Process" */
{ const char *c = qname ? strrchr(qname, ':') : NULL; return c ? c + 1 : qname; }

/* xsd:decimal text -> hundredths; 0 when not a decimal with at most 2 significant decimals */
static int cents(const char *s, long long *out)
{
  long long v = 0; int neg = 0, frac = -1, digits = 0;
  if (!s) return 0;
  while (*s == ' ' || *s == '\n' || *s == '\t') s++;
  if (*s == '+' || *s == '-') neg = *s++ == '-';
  for (; *s; s++) {
    if (*s == '.' && frac < 0) { frac = 0; continue; }
    if (*s < '0' || *s > '9') break;
    digits++;
    if (frac >= 2) { if (*s != '0') return 0; continue; }
    v = v * 10 + (*s - '0');
    if (frac >= 0) frac++;
  }
  while (*s == ' ' || *s == '\n' || *s == '\t') s++;
  if (*s || !digits) return 0;
  for (; frac < 2; frac = frac < 0 ? 1 : frac + 1) v *= 10;
  *out = neg ? -v : v;
  return 1;
}

static struct soap *new_soap(int version)
{
  struct soap *soap = soap_new1(SOAP_C_UTFSTRING);
  soap_set_namespaces(soap, version == 2 ? ns12 : namespaces);
  soap_set_version(soap, version);
  if (getenv("GSOAP_TRACE")) {
    orig_fsend = soap->fsend; soap->fsend = trace_send;
    orig_frecv = soap->frecv; soap->frecv = trace_recv;
  }
  return soap;
}

/* one AccountInquiry; session == NULL: no header at all. Returns the gSOAP rc. */
static int inquiry(struct soap *soap, int version, LONG64 account, LONG64 *max_txns,
                   const char *sid, enum _nsk__Session_SessionCommand *cmd,
                   struct tns__ACCTINQ_REPLY *reply)
{
  struct tns__ACCTINQ_REQUEST *req = soap_new_tns__ACCTINQ_REQUEST(soap, 1);
  req->ACCOUNT_NO = soap_malloc(soap, sizeof(LONG64));
  *req->ACCOUNT_NO = account;
  req->MAX_TXNS = max_txns;
  soap->header = NULL;
  if (sid || cmd) {
    struct _nsk__Session *s = soap_new__nsk__Session(soap, 1);
    s->SessionID = sid ? soap_strdup(soap, sid) : NULL;
    s->SessionCommand = cmd;
    soap->header = soap_new_SOAP_ENV__Header(soap, 1);
    soap->header->nsk__Session = s;
  }
  return version == 2
    ? soap_call___tns__AccountInquiry_(soap, endpoint, NULL, req, reply)
    : soap_call___tns__AccountInquiry(soap, endpoint, NULL, req, reply);
}

static void expect_ok(struct soap *soap, int rc)
{
  if (rc != SOAP_OK)
    FAIL("gSOAP error %d, faultcode %s, faultstring %s, detail %s", rc,
         nz(soap_faultcode(soap) ? *soap_faultcode(soap) : NULL),
         nz(soap_fault_string(soap)), nz(soap_fault_detail(soap)));
}

static const char *reply_sid(struct soap *soap)
{
  return soap->header && soap->header->nsk__Session ? soap->header->nsk__Session->SessionID : NULL;
}

static struct SOAP_ENV__Detail *detail(struct soap *soap)
{
  if (!soap->fault) return NULL;
  return soap->version == 2 ? soap->fault->SOAP_ENV__Detail : soap->fault->detail;
}

/* detailCode is declared in a schema without targetNamespace (unqualified on the wire), but
 * wsdl2h 2.8.124 generates the Detail member as tns__detailCode (tag "tns:detailCode"), which
 * never matches; gSOAP then keeps the element in the Detail's raw __any XML. Take the typed
 * member when it is there, else the raw <detailCode> element. Returns which one, or NULL. */
static const char *detail_code(struct soap *soap, int *code)
{
  struct SOAP_ENV__Detail *d = detail(soap);
  const char *raw = soap_fault_detail(soap), *p;
  char *end;
  if (d && d->tns__detailCode) { *code = *d->tns__detailCode; return "typed"; }
  if (!raw || !(p = strstr(raw, "<detailCode>"))) return NULL;
  *code = (int)strtol(p + strlen("<detailCode>"), &end, 10);
  return strncmp(end, "</detailCode>", 13) ? NULL : "raw detail XML";
}

/* gSOAP returns a received SOAP Fault as SOAP_SVR_FAULT (code exactly Server/Receiver),
 * SOAP_CLI_FAULT (exactly Client/Sender) or SOAP_FAULT (any other code, e.g. Client.Process) */
static const char *fault_rc(struct soap *soap, int rc)
{
  if (!soap->fault) return NULL;
  return rc == SOAP_FAULT ? "SOAP_FAULT" : rc == SOAP_CLI_FAULT ? "SOAP_CLI_FAULT"
       : rc == SOAP_SVR_FAULT ? "SOAP_SVR_FAULT" : NULL;
}

static void check_balance(struct tns__ACCTINQ_REPLY *r, long long want)
{
  long long got;
  if (!cents(r->BALANCE, &got) || got != want)
    FAIL("BALANCE is %s, want %lld.%02lld", nz(r->BALANCE), want / 100, llabs(want) % 100);
}

/* begin + end (+ continue for SOAP 1.1) + unknown-session-fault, in one SOAP version */
static void session_steps(int version)
{
  struct soap *soap = new_soap(version);
  struct tns__ACCTINQ_REPLY r;
  enum _nsk__Session_SessionCommand begin = _nsk__Session_SessionCommand__Begin;
  enum _nsk__Session_SessionCommand end = _nsk__Session_SessionCommand__End;
  char *id;
  int rc;

  step = version == 2 ? "soap12-begin" : "begin";
  expect_ok(soap, inquiry(soap, version, 1000000001LL, NULL, NULL, &begin, &r));
  if (!r.HOLDER_NAME || strcmp(r.HOLDER_NAME, "ADA LOVELACE"))
    FAIL("HOLDER-NAME is %s, want ADA LOVELACE", nz(r.HOLDER_NAME));
  check_balance(&r, 120000);
  if (!reply_sid(soap) || !*reply_sid(soap))
    FAIL("reply has no Session header with a SessionID");
  id = strdup(reply_sid(soap));
  printf("ok %s SOAP 1.%d HOLDER-NAME=%s BALANCE=%s SessionID=%s\n", step, version == 2 ? 2 : 1,
         r.HOLDER_NAME, r.BALANCE, id);

  if (version == 1) {
    step = "continue-1";
    expect_ok(soap, inquiry(soap, version, 1000000002LL, NULL, id, NULL, &r));
    check_balance(&r, -31050);
    if (!reply_sid(soap) || strcmp(reply_sid(soap), id))
      FAIL("reply SessionID is %s, want %s", nz(reply_sid(soap)), id);
    printf("ok %s BALANCE=%s SessionID=%s\n", step, r.BALANCE, id);

    step = "continue-2";
    LONG64 zero = 0;
    expect_ok(soap, inquiry(soap, version, 1000000003LL, &zero, id, NULL, &r));
    if (r.TXN_COUNT != 0 || r.__sizeTXN != 0)
      FAIL("TXN-COUNT is %lld with %d TXN elements, want 0", (long long)r.TXN_COUNT, r.__sizeTXN);
    if (!r.HOLDER_NAME || strcmp(r.HOLDER_NAME, "GRACE HOPPER"))
      FAIL("HOLDER-NAME is %s, want GRACE HOPPER", nz(r.HOLDER_NAME));
    if (!reply_sid(soap) || strcmp(reply_sid(soap), id))
      FAIL("reply SessionID is %s, want %s", nz(reply_sid(soap)), id);
    printf("ok %s TXN-COUNT=0 HOLDER-NAME=%s SessionID=%s\n", step, r.HOLDER_NAME, id);
  }

  step = version == 2 ? "soap12-end" : "end";
  expect_ok(soap, inquiry(soap, version, 1000000001LL, NULL, id, &end, &r));
  if (r.ACCOUNT_NO != 1000000001LL || !r.HOLDER_NAME)  /* parsed as AccountInquiryResponse */
    FAIL("AccountInquiryResponse has ACCOUNT-NO %lld, HOLDER-NAME %s",
         (long long)r.ACCOUNT_NO, nz(r.HOLDER_NAME));
  if (soap->header && soap->header->nsk__Session)
    FAIL("reply still carries a Session header (SessionID=%s)", nz(reply_sid(soap)));
  printf("ok %s AccountInquiryResponse ACCOUNT-NO=%lld, no Session header in soap->header\n",
         step, (long long)r.ACCOUNT_NO);

  step = version == 2 ? "soap12-fault" : "unknown-session-fault";
  rc = inquiry(soap, version, 1000000001LL, NULL, id, NULL, &r);
  const char *kind = fault_rc(soap, rc);
  if (!kind)
    FAIL("want a received SOAP Fault (SOAP_FAULT/SOAP_CLI_FAULT/SOAP_SVR_FAULT), got rc %d", rc);
  const char *code = nz(local(*soap_faultcode(soap)));
  int code_ok = version == 2 ? !strcmp(code, "Sender")
                             : !strcmp(code, "Client") || !strncmp(code, "Client.", 7);
  if (!code_ok)
    FAIL("faultcode is %s, want %s", nz(*soap_faultcode(soap)), version == 2 ? "Sender" : "Client");
  int dc; const char *how = detail_code(soap, &dc);
  if (!how || dc != -1001)
    FAIL("detailCode is %s (%d), want -1001; raw detail %s", how ? how : "missing", how ? dc : 0,
         nz(soap_fault_detail(soap)));
  printf("ok %s %s faultcode=%s%s%s detailCode=%d (%s) faultstring=%s\n", step, kind,
         *soap_faultcode(soap), soap_fault_subcode(soap) && version == 2 ? " subcode=" : "",
         soap_fault_subcode(soap) && version == 2 ? soap_fault_subcode(soap) : "",
         dc, how, nz(soap_fault_string(soap)));

  free(id);
  soap_destroy(soap); soap_end(soap); soap_free(soap);
}

static void record_fault(void)
{
  struct soap *soap = new_soap(1);
  struct tns__ACCTINQ_REPLY r;
  int rc;
  step = "record-fault";
  rc = inquiry(soap, 1, 42, NULL, NULL, NULL, &r);
  const char *kind = fault_rc(soap, rc);
  if (!kind)
    FAIL("want a received SOAP Fault (SOAP_FAULT/SOAP_CLI_FAULT/SOAP_SVR_FAULT), got rc %d", rc);
  if (strcmp(nz(local(*soap_faultcode(soap))), "Server"))
    FAIL("faultcode is %s, want Server", nz(*soap_faultcode(soap)));
  if (strcmp(nz(soap_fault_string(soap)), "Account inquiry failed"))
    FAIL("faultstring is %s, want Account inquiry failed", nz(soap_fault_string(soap)));
  struct SOAP_ENV__Detail *d = detail(soap);
  struct tns__ACCTINQ_ERROR *e = d ? d->tns__ACCTINQ_ERROR : NULL;
  if (!e || !e->ERROR_STATUS || strcmp(e->ERROR_STATUS, "10"))
    FAIL("typed detail ACCTINQ-ERROR %s, ERROR-STATUS %s, want 10; raw detail %s",
         e ? "present" : "missing", e ? nz(e->ERROR_STATUS) : "-", nz(soap_fault_detail(soap)));
  printf("ok %s %s faultcode=%s faultstring=%s ACCTINQ-ERROR ERROR-STATUS=%s ERROR-TEXT=%s\n",
         step, kind, *soap_faultcode(soap), soap_fault_string(soap), e->ERROR_STATUS, nz(e->ERROR_TEXT));
  soap_destroy(soap); soap_end(soap); soap_free(soap);
}

int main(int argc, char **argv)
{
  if (argc != 2) { fprintf(stderr, "usage: %s <endpoint-url>\n", argv[0]); return 2; }
  endpoint = argv[1];
  session_steps(1);   /* begin, continue-1, continue-2, end, unknown-session-fault */
  record_fault();
  session_steps(2);   /* soap12-begin, soap12-end, soap12-fault */
  return 0;
}
