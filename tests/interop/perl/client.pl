#!/usr/bin/perl
# SOAP::Lite interop client for the soap-broker (see tests/interop/README.md).
#
# Proves that SOAP::Lite, Perl's classic SOAP toolkit, interoperates with the broker in both
# SOAP 1.1 and SOAP 1.2: a NonStop session (Session header Begin / SessionID / End) against the
# AccountInquiry record service, reply headers read through SOAP::SOM paths, and faults
# ($som->fault) with the right codes and details. SOAP::Lite cannot generate a client from a
# document/literal WSDL, so the `wsdl` step only fetches the WSDL (LWP) and checks that it names
# the operation and this endpoint; calls use proxy + namespace. autotype(0) keeps SOAP::Lite from
# adding xsi:type to the Session header (the broker refuses unknown attributes on it) and to the
# literal body. SOAP 1.2 is a global switch in SOAP::Lite (soapversion before new()), so the 1.2
# steps run after all 1.1 steps, with a fresh client.
#
# Usage: client.pl <endpoint-url> <work-dir>
use strict;
use warnings;
use Data::Dumper ();
use LWP::UserAgent;
use XML::Parser;
use SOAP::Lite;

use constant { NS => 'urn:soap-broker:soap', NSK => 'urn:compaq_nsk_oss_SoapHeader' };
my ($url, $workdir) = @ARGV;
die "usage: $0 <endpoint-url> <work-dir>\n" unless defined $workdir;
$| = 1;

sub fail { print "FAIL $_[0]: $_[1]\n"; exit 1 }
sub check { my ($step, $cond, $msg) = @_; fail($step, $msg) unless $cond }
sub dec_is { my ($v, $want) = @_; defined $v && $v =~ /^-?\d+(\.\d+)?$/ && $v == $want }

# --- 1. wsdl: fetch it, check it names AccountInquiry and this endpoint for both ports ---------
my $resp = LWP::UserAgent->new->get("$url?wsdl");
fail('wsdl', 'GET ?wsdl: ' . $resp->status_line) unless $resp->is_success;
my (%ops, %addr, $port);
eval {
    XML::Parser->new(Namespaces => 1, Handlers => { Start => sub {
        my ($p, $el, %a) = @_;
        my $ns = $p->namespace($el) // '';
        $ops{$a{name}} = 1 if $el eq 'operation' && $ns eq 'http://schemas.xmlsoap.org/wsdl/'
            && $p->within_element($p->generate_ns_name('portType', 'http://schemas.xmlsoap.org/wsdl/'));
        $port = $a{name} if $el eq 'port';
        $addr{$port} = $a{location} if $el eq 'address' && $port;
    } })->parse($resp->decoded_content);
    1;
} or fail('wsdl', "unparsable WSDL: $@");
check('wsdl', $ops{AccountInquiry}, 'portType has no operation AccountInquiry: ' . join(',', sort keys %ops));
for my $p (qw(SoapSoap11Port SoapSoap12Port)) {
    check('wsdl', ($addr{$p} // '') eq $url, "port $p address " . ($addr{$p} // 'missing'));
}
print "ok wsdl fetched (SOAP::Lite $SOAP::Lite::VERSION, no WSDL client), operation AccountInquiry, "
    . "SoapSoap11Port and SoapSoap12Port at $url\n";

# --- helpers ------------------------------------------------------------------------------------
sub client {
    SOAP::Lite->new(proxy => $url)->ns(NS, 'a')->on_action(sub { '""' })->autotype(0);
}
sub session { SOAP::Header->name('nsk:Session')->attr({ 'xmlns:nsk' => NSK, @_ })->value('') }
sub inquiry {    # ($client, $step, $header or undef, name => value, ...) -> SOAP::SOM
    my ($c, $step, $hdr, @body) = @_;
    my @args;
    while (my ($k, $v) = splice @body, 0, 2) { push @args, SOAP::Data->name("a:$k" => $v) }
    my $som = eval { $c->call('AccountInquiry', @args, defined $hdr ? $hdr : ()) };
    fail($step, 'call died: ' . ($@ || 'no reply')) unless $som;
    return $som;
}
sub expect_reply {    # no fault, the body is one AccountInquiryResponse
    my ($step, $som) = @_;
    fail($step, 'unexpected fault: ' . fault_text($som)) if $som->fault;
    my $d = $som->dataof('/Envelope/Body/[1]');
    check($step, $d && $d->name eq 'AccountInquiryResponse' && ($d->uri // '') eq NS,
        'body is not an AccountInquiryResponse: ' . ($d ? '{' . ($d->uri // '') . '}' . $d->name : 'empty'));
    return sub { $som->valueof("/Envelope/Body/AccountInquiryResponse/$_[0]") };
}
sub reply_sid {    # SessionID of the reply's Session header; undef when there is no such header
    my $h = $_[0]->dataof('/Envelope/Header/Session');
    return undef unless $h && ($h->uri // '') eq NSK;
    return $h->attr->{SessionID} // '';
}
sub fault_text {
    local ($Data::Dumper::Terse, $Data::Dumper::Indent, $Data::Dumper::Sortkeys) = (1, 0, 1);
    return Data::Dumper::Dumper($_[0]->fault);
}

# --- a session: begin, continue x2, end, then the ended id must fault --------------------------
sub session_steps {
    my ($c, $p, $all) = @_;    # $p: step name prefix; $all: run the continue steps too
    my $som = inquiry($c, "${p}begin", session(SessionCommand => 'Begin'), 'ACCOUNT-NO' => 1000000001);
    my $v = expect_reply("${p}begin", $som);
    check("${p}begin", ($v->('HOLDER-NAME') // '') eq 'ADA LOVELACE', 'HOLDER-NAME ' . ($v->('HOLDER-NAME') // 'missing'));
    check("${p}begin", dec_is($v->('BALANCE'), 1200), 'BALANCE ' . ($v->('BALANCE') // 'missing'));
    my $sid = reply_sid($som);
    check("${p}begin", defined $sid && $sid ne '', 'no SessionID in the reply header');
    print "ok ${p}begin HOLDER-NAME=", $v->('HOLDER-NAME'), ' BALANCE=', $v->('BALANCE'), " SessionID=$sid\n";

    if ($all) {
        $som = inquiry($c, 'continue-1', session(SessionID => $sid), 'ACCOUNT-NO' => 1000000002);
        $v = expect_reply('continue-1', $som);
        check('continue-1', dec_is($v->('BALANCE'), -310.50), 'BALANCE ' . ($v->('BALANCE') // 'missing'));
        check('continue-1', (reply_sid($som) // '') eq $sid, 'reply SessionID ' . (reply_sid($som) // 'missing'));
        print 'ok continue-1 BALANCE=', $v->('BALANCE'), " same SessionID\n";

        $som = inquiry($c, 'continue-2', session(SessionID => $sid), 'ACCOUNT-NO' => 1000000003, 'MAX-TXNS' => 0);
        $v = expect_reply('continue-2', $som);
        check('continue-2', defined $v->('TXN-COUNT') && $v->('TXN-COUNT') =~ /^\d+$/ && $v->('TXN-COUNT') == 0,
            'TXN-COUNT ' . ($v->('TXN-COUNT') // 'missing'));
        check('continue-2', ($v->('HOLDER-NAME') // '') eq 'GRACE HOPPER', 'HOLDER-NAME ' . ($v->('HOLDER-NAME') // 'missing'));
        check('continue-2', (reply_sid($som) // '') eq $sid, 'reply SessionID ' . (reply_sid($som) // 'missing'));
        print 'ok continue-2 TXN-COUNT=', $v->('TXN-COUNT'), ' HOLDER-NAME=', $v->('HOLDER-NAME'), " same SessionID\n";
    }

    $som = inquiry($c, "${p}end", session(SessionID => $sid, SessionCommand => 'End'), 'ACCOUNT-NO' => 1000000001);
    expect_reply("${p}end", $som);
    check("${p}end", !defined reply_sid($som), 'the reply still has a Session header');
    print "ok ${p}end AccountInquiryResponse, no Session header in the reply\n";

    my $fstep = $p ? 'soap12-fault' : 'unknown-session-fault';
    $som = inquiry($c, $fstep, session(SessionID => $sid), 'ACCOUNT-NO' => 1000000001);
    check($fstep, $som->fault, 'no fault for the ended session');
    return ($som, $fstep);
}

# --- SOAP 1.1 -----------------------------------------------------------------------------------
my $c = client();
my ($som, $step) = session_steps($c, '', 1);
my ($code, $detail) = ($som->faultcode // '', $som->faultdetail);
check($step, $code =~ /^(?:[\w.-]+:)?Client(?:\.|$)/, "faultcode $code");
check($step, ref $detail eq 'HASH' && defined $detail->{detailCode} && $detail->{detailCode} eq '-1001',
    'detail: ' . fault_text($som));
print "ok $step \$som->fault faultcode=$code detailCode=$detail->{detailCode}\n";

$step = 'record-fault';
$som = inquiry($c, $step, undef, 'ACCOUNT-NO' => 42);
check($step, $som->fault, 'no fault for ACCOUNT-NO 42');
($code, $detail) = ($som->faultcode // '', $som->faultdetail);
check($step, $code =~ /^(?:[\w.-]+:)?Server(?:\.|$)/, "faultcode $code");
check($step, ($som->faultstring // '') eq 'Account inquiry failed', 'faultstring ' . ($som->faultstring // ''));
my $st = ref $detail eq 'HASH' && ref $detail->{'ACCTINQ-ERROR'} eq 'HASH' ? $detail->{'ACCTINQ-ERROR'}{'ERROR-STATUS'} : undef;
check($step, defined $st && $st eq '10', 'detail: ' . fault_text($som));
print "ok $step \$som->fault faultcode=$code faultstring=\"", $som->faultstring, "\" ERROR-STATUS=$st\n";

# --- SOAP 1.2 (global switch, then a new client) ------------------------------------------------
SOAP::Lite->soapversion('1.2');
$c = client();
($som, $step) = session_steps($c, 'soap12-', 0);
my $f = $som->fault;
$code = ref $f->{Code} eq 'HASH' ? $f->{Code}{Value} // '' : '';
check($step, $code =~ /^(?:[\w.-]+:)?Sender$/, "Code/Value $code: " . fault_text($som));
my $dc = ref $f->{Detail} eq 'HASH' ? $f->{Detail}{detailCode} : undef;
check($step, defined $dc && $dc eq '-1001', 'detail: ' . fault_text($som));
print "ok $step \$som->fault Code=$code detailCode=$dc\n";
exit 0;
