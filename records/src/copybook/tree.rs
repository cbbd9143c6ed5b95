//! Entries made a tree of items: levels nested, sizes and offsets computed, REDEFINES placed,
//! the DEPENDING ON table found.

use super::entry::Entry;
use super::picture::{picture, Pic};
use super::{err, CopybookError};
use crate::layout::{Depending, Item, Kind, Layout, NumberPic, Occurs, Sign, Usage, Value};

/// An item being built: its entry and its children so far.
struct Open {
    entry: Entry,
    children: Vec<Placed>,
    /// The usage its group gave (applies below).
    usage: Option<Usage>,
}

pub(super) fn build(entries: Vec<Entry>) -> Result<Vec<Layout>, CopybookError> {
    let mut layouts = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    for e in entries {
        let record_start = e.level == 1 || e.level == 77;
        if stack.is_empty() && !record_start {
            return err(e.line, format!("level {:02} before any 01 record", e.level));
        }
        // Close every open item at this level or below it.
        while let Some(top) = stack.last() {
            if !(record_start || top.entry.level >= e.level) {
                break;
            }
            let Some(open) = stack.pop() else { break };
            let done = close(open)?;
            match stack.last_mut() {
                Some(parent) => parent.children.push(done),
                None => layouts.push(finish(done.item)?),
            }
        }
        let usage = e.usage.or_else(|| stack.last().and_then(|p| p.usage));
        stack.push(Open {
            entry: e,
            children: Vec::new(),
            usage,
        });
    }
    while let Some(open) = stack.pop() {
        let done = close(open)?;
        match stack.last_mut() {
            Some(parent) => parent.children.push(done),
            None => layouts.push(finish(done.item)?),
        }
    }
    Ok(layouts)
}

/// An open item made whole: its kind, size and its children's offsets.
fn close(open: Open) -> Result<Placed, CopybookError> {
    let Open {
        entry: e,
        children,
        usage,
    } = open;
    let line = e.line;
    let name = e.name.clone().unwrap_or_else(|| "FILLER".to_string());
    let filler = name.eq_ignore_ascii_case("FILLER");
    let occurs = e.occurs.clone().unwrap_or(Occurs::Once);
    if matches!(e.level, 1 | 77) && occurs != Occurs::Once {
        return err(line, "a record (level 01 or 77) cannot OCCURS");
    }
    let (kind, size) = match (&e.pic, children.is_empty()) {
        (Some(_), false) => return err(line, format!("{name} has a PIC and items below it")),
        (None, true) => return err(line, format!("{name} has no PIC and no items below it")),
        (None, false) => {
            let mut kids = children;
            let mut offset = 0usize;
            let mut size = 0usize;
            for at in 0..kids.len() {
                let start = match &kids[at].redefines_name {
                    Some(target) => {
                        let t = kids[..at]
                            .iter()
                            .rposition(|k| k.item.name.eq_ignore_ascii_case(target) && k.redefines_name.is_none())
                            .ok_or(())
                            .or_else(|_| err(kids[at].line, format!("{} REDEFINES {target}, which is not an earlier item of the same group", kids[at].item.name)))?;
                        kids[at].item.redefines = Some(t);
                        kids[t].item.offset
                    }
                    None => offset,
                };
                kids[at].item.offset = start;
                let extent = kids[at].item.size * kids[at].item.occurs.max();
                if kids[at].redefines_name.is_none() {
                    offset = start + extent;
                }
                size = size.max(start + extent);
            }
            let items = kids.into_iter().map(|k| k.item).collect();
            (Kind::Group(items), size)
        }
        (Some(p), true) => match picture(p, line)? {
            Pic::Text(n) => {
                if usage.is_some_and(|u| u != Usage::Display) {
                    return err(line, format!("{name}: a PIC X item is DISPLAY, not COMP"));
                }
                (Kind::Text, n)
            }
            Pic::Number {
                digits,
                scale,
                signed,
            } => {
                let pic = NumberPic {
                    digits,
                    scale,
                    signed,
                    usage: usage.unwrap_or(Usage::Display),
                    sign: e.sign.unwrap_or(Sign::TrailingOverpunch),
                };
                let size = pic.size().or_else(|m| err(line, format!("{name}: {m}")))?;
                (Kind::Number(pic), size)
            }
        },
    };
    if let Some(v) = &e.value {
        check_value(v, &kind, size, &name, line)?;
    }
    Ok(Placed {
        item: Item {
            name,
            filler,
            offset: 0,
            size,
            occurs,
            redefines: None,
            kind,
            value: e.value,
        },
        line,
        redefines_name: e.redefines,
    })
}

/// A built item waiting for its parent to place it (the parent resolves REDEFINES by name).
#[derive(Clone)]
struct Placed {
    item: Item,
    line: usize,
    redefines_name: Option<String>,
}

fn check_value(
    v: &Value,
    kind: &Kind,
    size: usize,
    name: &str,
    line: usize,
) -> Result<(), CopybookError> {
    match (v, kind) {
        (Value::Text(t), Kind::Text) if t.chars().count() > size => err(
            line,
            format!("{name}: VALUE {t:?} is longer than the item's {size} bytes"),
        ),
        (Value::Text(_), Kind::Number(_)) => err(
            line,
            format!("{name}: a numeric item's VALUE is a number, not a quoted literal"),
        ),
        (Value::Number(_), Kind::Text) => {
            err(line, format!("{name}: a text item's VALUE is quoted"))
        }
        (Value::Number(n), Kind::Number(pic)) => crate::number::fit(*n, pic)
            .map(|_| ())
            .or_else(|m| err(line, format!("{name}: VALUE {m}"))),
        (Value::Spaces, Kind::Number(_)) => err(
            line,
            format!("{name}: a numeric item cannot be VALUE SPACES"),
        ),
        _ => Ok(()),
    }
}

/// A record made a layout: its `DEPENDING ON` table found and checked.
fn finish(root: Item) -> Result<Layout, CopybookError> {
    let mut depending = None;
    let mut counters: Vec<(Vec<String>, usize, NumberPic)> = Vec::new();
    walk(&root, 0, &mut Vec::new(), &mut |item, abs, path| {
        if let Kind::Number(pic) = &item.kind {
            if !item.occurs.is_table() {
                counters.push((path.to_vec(), abs, *pic));
            }
        }
        if let Occurs::Depending { min, max, on } = &item.occurs {
            depending = Some((path.to_vec(), abs, item.size, *min, *max, on.clone()));
        }
    });
    let depending = match depending {
        None => None,
        Some((table, offset, size, min, max, on)) => {
            // Standard COBOL: nothing may follow the table in the record.
            if offset + size * max != root.size {
                return err(
                    0,
                    format!(
                        "{}: the OCCURS … DEPENDING ON table {} must end the record",
                        root.name,
                        table.join(".")
                    ),
                );
            }
            let Some((counter, counter_offset, counter_pic)) = counters
                .iter()
                .rfind(|(p, at, _)| {
                    p.last().is_some_and(|n| n.eq_ignore_ascii_case(&on)) && *at < offset
                })
                .cloned()
            else {
                return err(
                    0,
                    format!(
                        "{}: {} DEPENDING ON {on}: no numeric item {on} before the table",
                        root.name,
                        table.join(".")
                    ),
                );
            };
            if counter_pic.scale > 0 {
                return err(
                    0,
                    format!("{}: the count {on} must be an integer", root.name),
                );
            }
            Some(Depending {
                offset,
                size,
                min,
                max,
                table,
                counter,
                counter_offset,
                counter_pic,
            })
        }
    };
    Ok(Layout {
        name: root.name.clone(),
        root,
        depending,
    })
}

/// Visit every item with its absolute offset (first occurrence) and path below the record.
fn walk(
    item: &Item,
    abs: usize,
    path: &mut Vec<String>,
    f: &mut dyn FnMut(&Item, usize, &[String]),
) {
    for child in item.children() {
        path.push(child.name.clone());
        let at = abs + child.offset;
        f(child, at, path);
        walk(child, at, path, f);
        path.pop();
    }
}
