#!/usr/bin/env node
// node-soap interop client (npm `soap`, see package.json) for tests/interop/README.md.
//
// Proves that node-soap, built only from the broker's served WSDL, can drive the NonStop
// `Session` header round trip (Begin -> continue -> continue -> End) on the record service
// `AccountInquiry`, reads the reply's `Session` header, and surfaces both kinds of fault
// (unknown session: Client/-1001; record error: Server + ACCTINQ-ERROR) as rejected calls with
// `err.root.Envelope.Body.Fault`; then the same over SOAP 1.2 (`SoapSoap12Port` plus
// `forceSoap12Headers`, which node-soap needs to actually send a 1.2 envelope).
//
// Usage: node client.js <endpoint-url> <work-dir>   (node-soap generates nothing: work-dir unused)
'use strict';
const soap = require('soap');

const [endpoint, workDir] = process.argv.slice(2);
if (!endpoint || !workDir) {
  console.error('usage: client.js <endpoint-url> <work-dir>');
  process.exit(2);
}
const NSK = 'urn:compaq_nsk_oss_SoapHeader';
let current = null; // the client of the running step, for the wire dump on failure

function check(cond, what) {
  if (!cond) throw new Error(what);
}

async function step(name, fn) {
  try {
    console.log(`ok ${name} ${await fn()}`);
  } catch (e) {
    console.log(`FAIL ${name}: ${e.message}`);
    if (current) {
      console.error(`--- last request:\n${current.lastRequest}\n--- last response:\n${current.lastResponse}`);
    }
    process.exit(1);
  }
}

// A decimal in canonical form ("1200.00" -> "1200", "-310.50" -> "-310.5"), so values compare
// as decimals without going through floating point.
function decimal(v) {
  const m = /^\s*([+-]?)0*(\d*?)(?:\.(\d*?)0*)?\s*$/.exec(String(v));
  check(m && /\d/.test(m[0]), `not a decimal: ${JSON.stringify(v)}`);
  const int = m[2] || '0';
  const frac = m[3] || '';
  const zero = /^0*$/.test(int + frac);
  return (m[1] === '-' && !zero ? '-' : '') + int + (frac ? '.' + frac : '');
}

// One call of AccountInquiry through a given port, with the given Session attributes (or none).
// Resolves to {result, header, body}: the response object, the parsed reply Header and the
// parsed reply Body (to see the response element's name).
function inquiry(client, port, args, session) {
  current = client;
  client.clearSoapHeaders();
  if (session) client.addSoapHeader({ Session: { attributes: session } }, '', 'nsk', NSK);
  const method = client.SoapService[port].AccountInquiry;
  return new Promise((resolve, reject) => {
    method(args, (err, result, raw, header) => {
      if (err) return reject(err);
      resolve({ result, header, body: client.wsdl.xmlToObject(raw).Body });
    });
  });
}

// The same call, which must be rejected with a SOAP fault; resolves to the parsed Fault.
async function inquiryFault(client, port, args, session) {
  let reply;
  try {
    reply = await inquiry(client, port, args, session);
  } catch (err) {
    const fault = err.root && err.root.Envelope && err.root.Envelope.Body && err.root.Envelope.Body.Fault;
    check(fault, `rejected without a SOAP fault: ${err.message}`);
    return fault;
  }
  throw new Error(`expected a fault, got a reply ${JSON.stringify(reply.result)}`);
}

const sessionId = (header) => header && header.Session && header.Session.attributes
  && header.Session.attributes.SessionID;
// The class of a fault code: "SOAP-ENV:Client.Process" -> "Client", "env:Sender" -> "Sender".
const codeClass = (code) => String(code).replace(/^[^:]*:/, '').split('.')[0];

// begin / continue / end of one session through `port`, returning the session id.
// `envNs`: the envelope namespace the request must have gone out in (node-soap falls back to 1.1
// silently when it is not forced to 1.2).
async function begin(name, client, port, envNs) {
  let id;
  await step(name, async () => {
    const { result: r, header } = await inquiry(client, port, { 'ACCOUNT-NO': 1000000001 }, { SessionCommand: 'Begin' });
    check(String(client.lastRequest).includes(`"${envNs}"`), `request not sent in ${envNs}`);
    check(r['HOLDER-NAME'] === 'ADA LOVELACE', `HOLDER-NAME ${JSON.stringify(r['HOLDER-NAME'])}`);
    check(decimal(r.BALANCE) === decimal('1200.00'), `BALANCE ${JSON.stringify(r.BALANCE)}`);
    id = sessionId(header);
    check(typeof id === 'string' && id !== '', `no SessionID in the reply header ${JSON.stringify(header)}`);
    return `SessionID=${id} HOLDER-NAME=${r['HOLDER-NAME']} BALANCE=${r.BALANCE}`;
  });
  return id;
}

async function end(name, client, port, id) {
  await step(name, async () => {
    const { body, header } = await inquiry(client, port, { 'ACCOUNT-NO': 1000000001 }, { SessionID: id, SessionCommand: 'End' });
    const names = Object.keys(body || {}).filter((k) => k !== 'attributes');
    check(names.length === 1 && names[0] === 'AccountInquiryResponse', `reply body holds ${JSON.stringify(names)}`);
    check(!(header && header.Session), `reply still carries a Session header ${JSON.stringify(header)}`);
    return 'AccountInquiryResponse, no Session header in the reply';
  });
}

async function unknownSession(name, client, port, id, expectedClass) {
  await step(name, async () => {
    const f = await inquiryFault(client, port, { 'ACCOUNT-NO': 1000000001 }, { SessionID: id });
    const code = f.faultcode !== undefined ? f.faultcode : f.Code && f.Code.Value; // 1.1 / 1.2
    const detail = f.detail !== undefined ? f.detail : f.Detail;
    check(codeClass(code) === expectedClass, `faultcode ${JSON.stringify(code)}`);
    const dc = detail && detail.detailCode;
    check(dc !== undefined && /^\s*-1001\s*$/.test(String(dc)), `detailCode ${JSON.stringify(dc)} in ${JSON.stringify(detail)}`);
    return `faultcode=${code} detailCode=${dc}`;
  });
}

(async () => {
  const wsdlUrl = endpoint + '?wsdl';
  let c11;
  let c12;
  await step('wsdl', async () => {
    // disableCache: node-soap otherwise shares one parsed WSDL (and its options, among them
    // forceSoap12Headers) between both clients, and the 1.1 client would send 1.2 envelopes.
    c11 = await soap.createClientAsync(wsdlUrl, { endpoint, disableCache: true });
    c12 = await soap.createClientAsync(wsdlUrl, { endpoint, disableCache: true, forceSoap12Headers: true });
    const ports = c11.describe().SoapService;
    check(ports && ports.SoapSoap11Port && ports.SoapSoap11Port.AccountInquiry, 'no SoapService/SoapSoap11Port/AccountInquiry');
    check(ports.SoapSoap12Port && ports.SoapSoap12Port.AccountInquiry, 'no SoapService/SoapSoap12Port/AccountInquiry');
    return `SoapService ports ${Object.keys(ports).join(',')} with AccountInquiry`;
  });

  const P11 = 'SoapSoap11Port';
  const id = await begin('begin', c11, P11, 'http://schemas.xmlsoap.org/soap/envelope/');

  await step('continue-1', async () => {
    const { result: r, header } = await inquiry(c11, P11, { 'ACCOUNT-NO': 1000000002 }, { SessionID: id });
    check(decimal(r.BALANCE) === decimal('-310.50'), `BALANCE ${JSON.stringify(r.BALANCE)}`);
    check(sessionId(header) === id, `reply SessionID ${JSON.stringify(sessionId(header))}`);
    return `BALANCE=${r.BALANCE} same SessionID`;
  });

  await step('continue-2', async () => {
    const { result: r, header } = await inquiry(c11, P11, { 'ACCOUNT-NO': 1000000003, 'MAX-TXNS': 0 }, { SessionID: id });
    check(r['TXN-COUNT'] !== undefined && /^\s*[+]?0+\s*$/.test(String(r['TXN-COUNT'])), `TXN-COUNT ${JSON.stringify(r['TXN-COUNT'])}`);
    check(r['HOLDER-NAME'] === 'GRACE HOPPER', `HOLDER-NAME ${JSON.stringify(r['HOLDER-NAME'])}`);
    check(sessionId(header) === id, `reply SessionID ${JSON.stringify(sessionId(header))}`);
    return `TXN-COUNT=${r['TXN-COUNT']} HOLDER-NAME=${r['HOLDER-NAME']} same SessionID`;
  });

  await end('end', c11, P11, id);
  await unknownSession('unknown-session-fault', c11, P11, id, 'Client');

  await step('record-fault', async () => {
    const f = await inquiryFault(c11, P11, { 'ACCOUNT-NO': 42 }, null);
    check(codeClass(f.faultcode) === 'Server', `faultcode ${JSON.stringify(f.faultcode)}`);
    check(f.faultstring === 'Account inquiry failed', `faultstring ${JSON.stringify(f.faultstring)}`);
    const e = f.detail && f.detail['ACCTINQ-ERROR'];
    check(e && String(e['ERROR-STATUS']) === '10', `detail ${JSON.stringify(f.detail)}`);
    return `faultcode=${f.faultcode} faultstring="${f.faultstring}" ERROR-STATUS=${e['ERROR-STATUS']}`;
  });

  const P12 = 'SoapSoap12Port';
  const id12 = await begin('soap12-begin', c12, P12, 'http://www.w3.org/2003/05/soap-envelope');
  await end('soap12-end', c12, P12, id12);
  await unknownSession('soap12-fault', c12, P12, id12, 'Sender');
})().catch((e) => {
  console.log(`FAIL internal: ${e.stack}`);
  process.exit(1);
});
