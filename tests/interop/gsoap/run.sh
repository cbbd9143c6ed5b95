#!/usr/bin/env bash
# gSOAP (C) interop client: proves that gSOAP 2.8 builds a working C client from the broker's
# served WSDL (wsdl2h -c -> soapcpp2 -c -> cc) and that it passes the steps of
# tests/interop/README.md over SOAP 1.1 and SOAP 1.2 (Session header in and out, faults with their codes and details).
# Usage: run.sh <endpoint-url> <work-dir>   (everything generated goes into <work-dir>)
set -euo pipefail
url=$1 work=$2
here=$(cd "$(dirname "$0")" && pwd)
cd "$work"

if ! wsdl2h -c -t "$here/typemap.dat" -o broker.h "$url?wsdl" >wsdl2h.log 2>&1 \
   || ! soapcpp2 -c -C -L -x -I/usr/share/gsoap/import broker.h >soapcpp2.log 2>&1; then
  cat wsdl2h.log soapcpp2.log >&2 2>/dev/null || true
  echo "FAIL wsdl: wsdl2h/soapcpp2 could not generate the client from $url?wsdl"; exit 1
fi
if ! cc -O0 -I. -o client "$here/client.c" soapC.c soapClient.c -lgsoap >cc.log 2>&1; then
  cat cc.log >&2
  echo "FAIL wsdl: the generated code does not compile with client.c"; exit 1
fi
echo "ok wsdl generated from $url?wsdl ($(grep -c '^SOAP_FMAC5 int SOAP_FMAC6 soap_call_' soapClient.c) call stubs, gSOAP $(wsdl2h -V 2>&1 | tail -1))"
exec ./client "$url"
