//! What the DSML dialect puts into its endpoints' WSDL: `batchRequest` and `batchResponse` in the
//! DSML v2 namespace (their content as DSML defines it, passed through), and the session headers
//! of DSML Services for Windows: `BeginSession`, `Session` and `EndSession` in, `Session` out.
//! SOAP 1.1 only, as the dialect.

use crate::wsdl::{HeaderBlock, Headers};

/// The DSML v2 namespace of `batchRequest` and `batchResponse`.
const DSML_CORE: &str = "urn:oasis:names:tc:DSML:2:0:core";

const SCHEMA: &str = r###"      <xsd:element name="BeginSession">
        <xsd:complexType><xsd:anyAttribute namespace="##other" processContents="lax"/></xsd:complexType>
      </xsd:element>
      <xsd:element name="Session">
        <xsd:complexType><xsd:attribute name="SessionID" type="xsd:string" use="required"/><xsd:anyAttribute namespace="##other" processContents="lax"/></xsd:complexType>
      </xsd:element>
      <xsd:element name="EndSession">
        <xsd:complexType><xsd:attribute name="SessionID" type="xsd:string" use="required"/><xsd:anyAttribute namespace="##other" processContents="lax"/></xsd:complexType>
      </xsd:element>
"###;

pub const HEADERS: Headers = Headers {
    prefix: "ad",
    namespace: super::read::NS,
    schema: SCHEMA,
    qualified_attributes: true,
    blocks: &[
        HeaderBlock {
            element: "BeginSession",
            input: true,
            output: false,
        },
        HeaderBlock {
            element: "Session",
            input: true,
            output: true,
        },
        HeaderBlock {
            element: "EndSession",
            input: true,
            output: false,
        },
    ],
    fault: None,
    soap12: false,
    body_namespace: |_| Some(DSML_CORE),
    response_name: |_| "batchResponse".to_string(),
};
