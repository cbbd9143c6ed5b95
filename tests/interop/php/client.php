<?php
// PHP SoapClient (ext/soap) interop client for tests/interop/README.md.
//
// Proves that PHP's SoapClient in WSDL mode, built only from the broker's served WSDL, can drive
// the NonStop `Session` header round trip (Begin -> continue -> continue -> End) on the record
// service `AccountInquiry` with `SoapHeader`s, reads the reply's `Session` header through
// `__soapCall(..., $output_headers)`, and surfaces both kinds of fault (unknown session:
// Client/-1001; record error: Server + ACCTINQ-ERROR) as `SoapFault`; then the same over SOAP 1.2
// (a second SoapClient with soap_version SOAP_1_2, which picks the WSDL's soap12 binding).
//
// Usage: php client.php <endpoint-url> <work-dir>   (SoapClient generates nothing: work-dir unused)

if ($argc < 3) {
    fwrite(STDERR, "usage: client.php <endpoint-url> <work-dir>\n");
    exit(2);
}
[, $endpoint, $workDir] = $argv;
ini_set('soap.wsdl_cache_enabled', '0');
const NSK = 'urn:compaq_nsk_oss_SoapHeader';
const ENV11 = 'http://schemas.xmlsoap.org/soap/envelope/';
const ENV12 = 'http://www.w3.org/2003/05/soap-envelope';
$current = null; // the client of the running step, for the wire dump on failure

function check(bool $cond, string $what): void
{
    if (!$cond) {
        throw new RuntimeException($what);
    }
}

function step(string $name, callable $fn)
{
    global $current;
    try {
        $details = $fn();
    } catch (Throwable $e) {
        echo "FAIL $name: ", $e->getMessage(), "\n";
        if ($current) {
            fwrite(STDERR, "--- last request:\n" . $current->__getLastRequest()
                . "\n--- last response:\n" . $current->__getLastResponse() . "\n");
        }
        exit(1);
    }
    echo "ok $name $details\n";
}

// A decimal in canonical form ("1200.00" -> "1200", "-310.50" -> "-310.5"), so values compare
// as decimals without going through floating point.
function decimal($v): string
{
    $ok = is_scalar($v) && preg_match('/^\s*([+-]?)0*(\d*?)(?:\.(\d*?)0*)?\s*$/', (string)$v, $m)
        && preg_match('/\d/', $m[0]);
    check($ok, 'not a decimal: ' . json_encode($v));
    $int = $m[2] !== '' ? $m[2] : '0';
    $frac = $m[3] ?? '';
    $neg = $m[1] === '-' && !preg_match('/^0*$/', $int . $frac);
    return ($neg ? '-' : '') . $int . ($frac !== '' ? ".$frac" : '');
}

// One call of AccountInquiry with the given Session attributes (or none): [result, reply headers].
function inquiry(SoapClient $c, array $args, ?array $session): array
{
    global $current;
    $current = $c;
    $headers = $session === null ? [] : [new SoapHeader(NSK, 'Session', $session)];
    $out = [];
    $r = $c->__soapCall('AccountInquiry', [$args], null, $headers, $out);
    return [$r, $out];
}

// The same call, which must throw a SoapFault; returns it.
function inquiryFault(SoapClient $c, array $args, ?array $session): SoapFault
{
    try {
        [$r] = inquiry($c, $args, $session);
    } catch (SoapFault $f) {
        return $f;
    }
    throw new RuntimeException('expected a SoapFault, got a reply ' . json_encode($r));
}

function sessionId(array $out)
{
    return isset($out['Session']->SessionID) ? $out['Session']->SessionID : null;
}

// The class of a fault code: "SOAP-ENV:Client.Process" -> "Client", "env:Sender" -> "Sender".
function codeClass($code): string
{
    return explode('.', preg_replace('/^[^:]*:/', '', (string)$code))[0];
}

// begin of a session; $envNs is the envelope namespace the request must have gone out in.
function begin(string $name, SoapClient $c, string $envNs): string
{
    $id = null;
    step($name, function () use ($c, $envNs, &$id) {
        [$r, $out] = inquiry($c, ['ACCOUNT-NO' => 1000000001], ['SessionCommand' => 'Begin']);
        check(strpos($c->__getLastRequest(), "\"$envNs\"") !== false, "request not sent in $envNs");
        check(($r->{'HOLDER-NAME'} ?? null) === 'ADA LOVELACE', 'HOLDER-NAME ' . json_encode($r->{'HOLDER-NAME'} ?? null));
        check(decimal($r->BALANCE ?? null) === decimal('1200.00'), 'BALANCE ' . json_encode($r->BALANCE ?? null));
        $id = sessionId($out);
        check(is_string($id) && $id !== '', 'no SessionID in the reply headers ' . json_encode($out));
        return "SessionID=$id HOLDER-NAME={$r->{'HOLDER-NAME'}} BALANCE={$r->BALANCE}";
    });
    return $id;
}

function end_(string $name, SoapClient $c, string $id): void
{
    step($name, function () use ($c, $id) {
        [$r, $out] = inquiry($c, ['ACCOUNT-NO' => 1000000001], ['SessionID' => $id, 'SessionCommand' => 'End']);
        // SoapClient decodes the WSDL's output element AccountInquiryResponse and returns null when
        // the Body has none; the raw reply is checked too (no DOM here: php-xml is not required).
        check(is_object($r) && (string)($r->{'ACCOUNT-NO'} ?? '') === '1000000001', 'reply decoded as ' . json_encode($r));
        $ok = preg_match('/<([\w.-]+:)?Body\b[^>]*>\s*<([\w.-]+:)?AccountInquiryResponse[\s\/>]/', $c->__getLastResponse());
        check($ok === 1, 'reply Body does not start with an AccountInquiryResponse');
        check(!isset($out['Session']), 'reply still carries a Session header ' . json_encode($out));
        return 'AccountInquiryResponse, no Session header in the reply';
    });
}

function unknownSession(string $name, SoapClient $c, string $id, string $class): void
{
    step($name, function () use ($c, $id, $class) {
        $f = inquiryFault($c, ['ACCOUNT-NO' => 1000000001], ['SessionID' => $id]);
        check(codeClass($f->faultcode) === $class, 'faultcode ' . json_encode($f->faultcode));
        $dc = $f->detail->detailCode ?? null;
        check(is_scalar($dc) && trim((string)$dc) === '-1001', 'detailCode ' . json_encode($dc) . ' in ' . json_encode($f->detail ?? null));
        return "faultcode={$f->faultcode} detailCode=$dc";
    });
}

$opts = ['location' => $endpoint, 'cache_wsdl' => WSDL_CACHE_NONE, 'trace' => true, 'exceptions' => true];
step('wsdl', function () use ($endpoint, $opts, &$c11, &$c12) {
    $c11 = new SoapClient("$endpoint?wsdl", $opts + ['soap_version' => SOAP_1_1]);
    $c12 = new SoapClient("$endpoint?wsdl", $opts + ['soap_version' => SOAP_1_2]);
    $ops = array_filter($c11->__getFunctions(), fn($f) => preg_match('/ AccountInquiry\(/', $f));
    check(count($ops) >= 1, 'no AccountInquiry in ' . json_encode($c11->__getFunctions()));
    return 'SOAP 1.1 and 1.2 clients, ' . reset($ops);
});

$id = begin('begin', $c11, ENV11);

step('continue-1', function () use ($c11, $id) {
    [$r, $out] = inquiry($c11, ['ACCOUNT-NO' => 1000000002], ['SessionID' => $id]);
    check(decimal($r->BALANCE ?? null) === decimal('-310.50'), 'BALANCE ' . json_encode($r->BALANCE ?? null));
    check(sessionId($out) === $id, 'reply SessionID ' . json_encode(sessionId($out)));
    return "BALANCE={$r->BALANCE} same SessionID";
});

step('continue-2', function () use ($c11, $id) {
    [$r, $out] = inquiry($c11, ['ACCOUNT-NO' => 1000000003, 'MAX-TXNS' => 0], ['SessionID' => $id]);
    $n = $r->{'TXN-COUNT'} ?? null;
    check(is_scalar($n) && preg_match('/^\s*\+?0+\s*$/', (string)$n) === 1, 'TXN-COUNT ' . json_encode($n));
    check(($r->{'HOLDER-NAME'} ?? null) === 'GRACE HOPPER', 'HOLDER-NAME ' . json_encode($r->{'HOLDER-NAME'} ?? null));
    check(sessionId($out) === $id, 'reply SessionID ' . json_encode(sessionId($out)));
    return "TXN-COUNT=$n HOLDER-NAME={$r->{'HOLDER-NAME'}} same SessionID";
});

end_('end', $c11, $id);
unknownSession('unknown-session-fault', $c11, $id, 'Client');

step('record-fault', function () use ($c11) {
    $f = inquiryFault($c11, ['ACCOUNT-NO' => 42], null);
    check(codeClass($f->faultcode) === 'Server', 'faultcode ' . json_encode($f->faultcode));
    check($f->faultstring === 'Account inquiry failed', 'faultstring ' . json_encode($f->faultstring));
    $st = $f->detail->{'ACCTINQ-ERROR'}->{'ERROR-STATUS'} ?? null;
    check(is_scalar($st) && (string)$st === '10', 'detail ' . json_encode($f->detail ?? null));
    return "faultcode={$f->faultcode} faultstring=\"{$f->faultstring}\" ERROR-STATUS=$st";
});

$id12 = begin('soap12-begin', $c12, ENV12);
end_('soap12-end', $c12, $id12);
unknownSession('soap12-fault', $c12, $id12, 'Sender');
exit(0);
