-- wrk script: the same ~1 KiB Echo envelope with no session header (for proxies and the bare echo).
wrk.method = "POST"
wrk.headers["Content-Type"] = "text/xml; charset=utf-8"
wrk.headers["SOAPAction"] = '""'
wrk.body = '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><Echo><text>'
  .. string.rep("x", 1000) .. '</text></Echo></soapenv:Body></soapenv:Envelope>'
