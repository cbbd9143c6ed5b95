-- wrk script: NonStop "continue" requests spread over pre-begun sessions.
-- Usage: SESSIONS=file-with-one-session-id-per-line wrk -s continue.lua URL
-- Each request picks the next session of the list (round robin per wrk thread).
local ids = {}
local n = 0
local text = string.rep("x", 1000)
local path = os.getenv("SESSIONS")
for line in io.lines(path) do
  if #line > 0 then table.insert(ids, line) end
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "text/xml; charset=utf-8"
wrk.headers["SOAPAction"] = '""'
request = function()
  n = n + 1
  local id = ids[(n % #ids) + 1]
  local body = '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Header>'
    .. '<nsk:Session xmlns:nsk="urn:compaq_nsk_oss_SoapHeader" SessionID="' .. id .. '"/></soapenv:Header>'
    .. '<soapenv:Body><Echo><text>' .. text .. '</text></Echo></soapenv:Body></soapenv:Envelope>'
  return wrk.format(nil, nil, nil, body)
end
