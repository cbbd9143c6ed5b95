//! What the sqlSession dialect puts into its endpoints' WSDL: the `sqlSession` header in and out
//! and `environmentChangeNotifications` in (SQL Server's options namespace); `sqlbatch` and its
//! response in SQL Server's SOAP namespace, web methods in the endpoint's namespace (SQL Server's
//! endpoint `NAMESPACE`), their content passed through.

use crate::wsdl::{HeaderBlock, Headers};

/// SQL Server's SOAP namespace, of `sqlbatch` and `sqlbatchResponse`.
const SQL_NS: &str = "http://schemas.microsoft.com/sqlserver/2004/SOAP";

const SCHEMA: &str = r###"      <xsd:element name="sqlSession">
        <xsd:complexType>
          <xsd:attribute name="initiate" type="xsd:boolean"/>
          <xsd:attribute name="sessionId" type="xsd:string"/>
          <xsd:attribute name="terminate" type="xsd:boolean"/>
          <xsd:attribute name="timeout" type="xsd:int"/>
          <xsd:attribute name="transactionDescriptor" type="xsd:string"/>
          <xsd:anyAttribute namespace="##other" processContents="lax"/>
        </xsd:complexType>
      </xsd:element>
      <xsd:element name="environmentChangeNotifications">
        <xsd:complexType><xsd:attribute name="transactionBoundary" type="xsd:boolean"/><xsd:anyAttribute namespace="##other" processContents="lax"/></xsd:complexType>
      </xsd:element>
"###;

pub const HEADERS: Headers = Headers {
    prefix: "sqloptions",
    namespace: super::read::NS,
    schema: SCHEMA,
    qualified_attributes: false,
    blocks: &[
        HeaderBlock {
            element: "sqlSession",
            input: true,
            output: true,
        },
        HeaderBlock {
            element: "environmentChangeNotifications",
            input: true,
            output: false,
        },
    ],
    fault: None,
    soap12: true,
    body_namespace: |service| (service == "sqlbatch").then_some(SQL_NS),
    response_name: |service| format!("{service}Response"),
};
