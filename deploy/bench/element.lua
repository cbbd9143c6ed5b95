-- wrk script: the ~1 KiB Echo body element alone, exactly what the broker's http adapter posts to its
-- backend (for nginx in front of `sample-server echo --http`, the `nginx-raw` target of soapbench compare).
wrk.method = "POST"
wrk.headers["Content-Type"] = "text/xml; charset=utf-8"
wrk.headers["X-Service"] = "Echo"
wrk.body = '<Echo xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><text>'
  .. string.rep("x", 1000) .. '</text></Echo>'
