#!/usr/bin/env bash
# JAX-WS RI (Java) interop client, see ../README.md: `run.sh <endpoint-url> <work-dir>`.
# Proves that wsimport accepts the served WSDL (with -extension for the SOAP 1.2 port) and that the
# generated stub, driven by Main.java, runs the suite's steps over SOAP 1.1 and 1.2.
# Everything generated (src/, classes/) stays in <work-dir>; toolkit noise goes to stderr.
set -euo pipefail
endpoint=$1 work=$2
here=$(cd "$(dirname "$0")" && pwd)
cp=/usr/share/java/jaxws-rt.jar   # its manifest Class-Path pulls in JAXB, SAAJ, ...

cd "$work"
mkdir -p src/client classes
if ! wsimport -extension -XadditionalHeaders -keep -Xnocompile -p broker -d src "$endpoint?wsdl" >&2; then
    echo "FAIL wsdl: wsimport rejected $endpoint?wsdl"; exit 1
fi
cp "$here/Main.java" src/client/
if ! javac -nowarn -cp "$cp" -d classes $(find src -name '*.java') >&2; then
    echo "FAIL wsdl: javac failed on the generated stub"; exit 1
fi
exec java -cp "classes:$cp" client.Main "$endpoint"
