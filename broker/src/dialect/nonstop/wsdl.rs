//! What the NonStop dialect puts into its endpoints' WSDL: the `Session` header in and out, the
//! `Encoding` header in, and its fault detail (`detailCode`, `detailString`) as a `wsdl:fault`.

use crate::wsdl::{DialectFault, HeaderBlock, Headers};

/// The header blocks' schema: the attributes `read.rs` reads (and `Subsession`, which replies
/// carry), and any attribute of another namespace (`soap:mustUnderstand`).
const SCHEMA: &str = r###"      <xsd:element name="Session">
        <xsd:complexType>
          <xsd:attribute name="SessionID" type="xsd:string"/>
          <xsd:attribute name="SessionCommand"><xsd:simpleType><xsd:restriction base="xsd:string"><xsd:enumeration value="Begin"/><xsd:enumeration value="End"/><xsd:enumeration value="AbortSubsession"/></xsd:restriction></xsd:simpleType></xsd:attribute>
          <xsd:attribute name="BeginNewTransaction"><xsd:simpleType><xsd:restriction base="xsd:string"><xsd:enumeration value="yes"/><xsd:enumeration value="no"/></xsd:restriction></xsd:simpleType></xsd:attribute>
          <xsd:attribute name="CurrentTransactionCommand"><xsd:simpleType><xsd:restriction base="xsd:string"><xsd:enumeration value="End"/><xsd:enumeration value="Abort"/></xsd:restriction></xsd:simpleType></xsd:attribute>
          <xsd:attribute name="Subsession" type="xsd:string"/>
          <xsd:anyAttribute namespace="##other" processContents="lax"/>
        </xsd:complexType>
      </xsd:element>
      <xsd:element name="Encoding">
        <xsd:complexType>
          <xsd:attribute name="OutputEncoding" type="xsd:string" use="required"/>
          <xsd:anyAttribute namespace="##other" processContents="lax"/>
        </xsd:complexType>
      </xsd:element>
"###;

/// The detail every NonStop fault starts with (`faults.rs`), in no namespace.
const FAULT_SCHEMA: &str = r###"      <xsd:element name="detailCode" type="xsd:int"/>
      <xsd:element name="detailString">
        <xsd:complexType><xsd:simpleContent><xsd:extension base="xsd:string"><xsd:attribute name="ts" type="xsd:string"/></xsd:extension></xsd:simpleContent></xsd:complexType>
      </xsd:element>
"###;

pub const HEADERS: Headers = Headers {
    prefix: "nsk",
    namespace: super::read::NS,
    schema: SCHEMA,
    qualified_attributes: false,
    blocks: &[
        HeaderBlock {
            element: "Session",
            input: true,
            output: true,
        },
        HeaderBlock {
            element: "Encoding",
            input: true,
            output: false,
        },
    ],
    fault: Some(DialectFault {
        name: "NonStopFault",
        element: "detailCode",
        schema: FAULT_SCHEMA,
    }),
    soap12: true,
    body_namespace: |_| None,
    response_name: |service| format!("{service}Response"),
};
