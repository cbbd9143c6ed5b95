//! # `cart`: the context-sensitive sample class
//!
//! ```text
//! sample-server cart
//! ```
//!
//! A shopping cart kept in the worker's memory, one per dialog: the Pathsend dialog model, where
//! a conversation is pinned to one server process because that process holds its state. The
//! broker opens the dialog with the session's first cart request (`dialog: begin`), sends the
//! later ones to the same worker (`dialog: continue`), and the server decides when it ends.
//!
//! ## Services (the operation comes from the `REQUEST`'s `operation` header)
//!
//! ```xml
//! <CartAdd><item>apple</item><qty>2</qty></CartAdd>
//!   → <CartAddResponse><item><name>apple</name><qty>2</qty></item>…<count>N</count></CartAddResponse>
//! <CartList/>
//!   → <CartListResponse><item><name>apple</name><qty>2</qty></item>…<count>N</count></CartListResponse>
//! <CartCheckout/>
//!   → <CartCheckoutResponse><items>N</items><total>Q</total></CartCheckoutResponse>
//! ```
//!
//! `CartAdd` and `CartList` answer `dialog-continue` (the dialog stays open); `CartCheckout`
//! answers `dialog-end` and forgets the cart. Adding an item already in the cart adds to its
//! quantity; items are listed in the order they were first added. `count` and `items` are the
//! number of distinct items, `total` the sum of the quantities. Element names are matched by local
//! name in any namespace; the response takes the request element's namespace.
//!
//! The cart is keyed by the request's `session` header, so one worker may hold several dialogs
//! (`max_dialogs_per_worker`). A request with `dialog: begin` starts an empty cart (replacing any
//! leftover of an earlier dialog of that session); `dialog: continue` for a session without a cart
//! here, and `dialog: none` (a context-free call, which the broker does not send to a
//! context-sensitive class), are `Client` faults. `DIALOG-ABORT` discards the session's cart.
//!
//! Validation: an item name is 1 to 200 bytes without control characters; a quantity is an
//! integer from 1 to 1 000 000; a cart holds at most 1 000 distinct items. Anything else is a
//! `Client` fault naming the problem, and a fault leaves the dialog open (protocol §5).
//!
//! ## Test aid
//!
//! - `<abortDialog/>` inside `CartAdd`: the server aborts the dialog itself (`dialog-abort`, empty
//!   payload, Pathsend FEEOF) and drops the cart, without adding anything.

use super::xml::{self, Writer};
use super::{Action, SampleClass};
use crate::protocol::{Dialog, Message, Request};
use crate::ReplyStatus;
use bytes::Bytes;
use std::collections::HashMap;
use std::time::Duration;

const MAX_ITEM_NAME: usize = 200;
const MAX_QTY: u64 = 1_000_000;
const MAX_ITEMS: usize = 1_000;
/// Carts held at once: the broker bounds dialogs per worker far below this; the bound only keeps a
/// misbehaving peer from growing the process without limit.
const MAX_CARTS: usize = 10_000;

#[derive(Default)]
pub struct Cart {
    /// session → the items in the order first added, with their quantities.
    carts: HashMap<String, Vec<(String, u64)>>,
}

impl Cart {
    fn serve(&mut self, request: &Request) -> Result<Action, Action> {
        let op = request.operation.as_str();
        if !matches!(op, "CartAdd" | "CartList" | "CartCheckout") {
            return Err(Action::fault(
                "Client",
                format!(
                    "unknown operation {} (this class offers CartAdd, CartList and CartCheckout)",
                    xml::one_line(op)
                ),
            ));
        }
        let Some(session) = request.session.as_deref() else {
            return Err(needs_session());
        };
        match request.dialog {
            Dialog::None => return Err(needs_session()),
            Dialog::Begin => {
                if !self.carts.contains_key(session) && self.carts.len() >= MAX_CARTS {
                    return Err(xml::error(format!(
                        "this worker already holds {MAX_CARTS} carts"
                    )));
                }
                self.carts.insert(session.to_string(), Vec::new());
            }
            Dialog::Continue => {
                if !self.carts.contains_key(session) {
                    return Err(Action::fault(
                        "Client",
                        format!(
                            "no cart for session {} on this worker: the dialog was not begun here",
                            xml::one_line(session)
                        ),
                    ));
                }
            }
        }
        let root = xml::parse(&request.payload)?;

        match op {
            "CartAdd" => {
                if xml::has_child(&root, "abortDialog") {
                    self.carts.remove(session);
                    return Ok(Action::Reply {
                        status: ReplyStatus::DialogAbort,
                        payload: Bytes::new(),
                        delay: Duration::ZERO,
                    });
                }
                let item = parse_item(&root)?;
                let qty = parse_qty(&root)?;
                let cart = self.carts.entry(session.to_string()).or_default();
                match cart.iter().position(|(name, _)| *name == item) {
                    Some(at) => {
                        let held = &mut cart[at].1;
                        *held = held
                            .checked_add(qty)
                            .ok_or_else(|| Action::fault("Client", "that quantity is too large"))?;
                    }
                    None if cart.len() >= MAX_ITEMS => {
                        return Err(Action::fault(
                            "Client",
                            format!("a cart holds at most {MAX_ITEMS} distinct items"),
                        ));
                    }
                    None => cart.push((item, qty)),
                }
                Ok(list(&root, "CartAddResponse", cart))
            }
            "CartList" => {
                let cart = self.carts.get(session).map_or(&[][..], Vec::as_slice);
                Ok(list(&root, "CartListResponse", cart))
            }
            _ => {
                let cart = self.carts.remove(session).unwrap_or_default();
                let total = cart
                    .iter()
                    .map(|(_, qty)| *qty)
                    .fold(0u64, u64::saturating_add);
                let mut w = Writer::like(&root);
                w.open("CartCheckoutResponse", &[])
                    .leaf("items", &cart.len().to_string())
                    .leaf("total", &total.to_string())
                    .close("CartCheckoutResponse");
                Ok(xml::reply(ReplyStatus::DialogEnd, w.finish()))
            }
        }
    }
}

impl SampleClass for Cart {
    fn server_name(&self) -> String {
        format!("sample-server cart {}", env!("CARGO_PKG_VERSION"))
    }

    fn request(&mut self, request: &Request) -> Action {
        self.serve(request).unwrap_or_else(|action| action)
    }

    fn control(&mut self, message: &Message) -> Message {
        match message {
            Message::DialogAbort { id, session } => {
                self.carts.remove(session);
                Message::Ack {
                    id: *id,
                    transaction: None,
                }
            }
            // Not transactional: the default error reply for PREPARE, COMMIT and the rest.
            other => super::not_transactional(&self.server_name(), other),
        }
    }
}

fn needs_session() -> Action {
    Action::fault(
        "Client",
        "the cart needs a session: CartAdd, CartList and CartCheckout run in a dialog that a \
         session begins (call them inside a session)",
    )
}

/// `<itemName>`… the listing shared by CartAdd and CartList.
fn list(root: &xmltree::Element, name: &str, cart: &[(String, u64)]) -> Action {
    let mut w = Writer::like(root);
    w.open(name, &[]);
    for (item, qty) in cart {
        w.open("item", &[])
            .leaf("name", item)
            .leaf("qty", &qty.to_string())
            .close("item");
    }
    w.leaf("count", &cart.len().to_string()).close(name);
    xml::reply(ReplyStatus::DialogContinue, w.finish())
}

fn parse_item(root: &xmltree::Element) -> Result<String, Action> {
    let item = xml::required_text(root, "item")?;
    if item.is_empty() || item.len() > MAX_ITEM_NAME || item.chars().any(char::is_control) {
        return Err(Action::fault(
            "Client",
            format!(
                "item name {:?} is not valid: 1 to {MAX_ITEM_NAME} bytes, no control characters",
                xml::one_line(&item)
            ),
        ));
    }
    Ok(item)
}

fn parse_qty(root: &xmltree::Element) -> Result<u64, Action> {
    let text = xml::required_text(root, "qty")?;
    match text.parse::<u64>() {
        Ok(qty) if (1..=MAX_QTY).contains(&qty) => Ok(qty),
        _ => Err(Action::fault(
            "Client",
            format!(
                "qty {:?} is not an integer from 1 to {MAX_QTY}",
                xml::one_line(&text)
            ),
        )),
    }
}
