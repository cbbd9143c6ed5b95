//! Picture strings: `X(10)`, `S9(7)V99`.

use super::{err, CopybookError};

/// What a picture string says.
pub(super) enum Pic {
    Text(usize),
    Number { digits: u8, scale: u8, signed: bool },
}

/// Read `X(10)`, `XXX`, `S9(7)V99`, `9(3)V9(2)`, `SV99`.
pub(super) fn picture(p: &str, line: usize) -> Result<Pic, CopybookError> {
    // Expand `c(n)` into n times c.
    let mut symbols: Vec<char> = Vec::new();
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if chars.get(i + 1) == Some(&'(') {
            let close = chars[i + 2..]
                .iter()
                .position(|&x| x == ')')
                .map(|at| at + i + 2)
                .ok_or(())
                .or_else(|_| err(line, format!("PIC {p}: a '(' is not closed")))?;
            let n: usize = chars[i + 2..close]
                .iter()
                .collect::<String>()
                .parse()
                .or_else(|_| {
                    err(
                        line,
                        format!("PIC {p}: the count in parentheses is not a number"),
                    )
                })?;
            if n == 0 || n > 65_535 {
                return err(line, format!("PIC {p}: a count of {n} is out of range"));
            }
            symbols.extend(std::iter::repeat_n(c, n));
            i = close + 1;
        } else {
            symbols.push(c);
            i += 1;
        }
    }
    if symbols.iter().all(|&c| c == 'X') && !symbols.is_empty() {
        return Ok(Pic::Text(symbols.len()));
    }
    let mut signed = false;
    let mut digits = 0usize;
    let mut scale = 0usize;
    let mut after_point = false;
    for (at, &c) in symbols.iter().enumerate() {
        match c {
            'S' if at == 0 => signed = true,
            '9' => {
                digits += 1;
                if after_point {
                    scale += 1;
                }
            }
            'V' if !after_point => after_point = true,
            'P' => return err(line, format!("PIC {p}: P scaling is not supported")),
            'A' | 'N' | 'G' => {
                return err(
                    line,
                    format!("PIC {p}: alphabetic and national pictures are not supported; use X"),
                )
            }
            'X' => {
                return err(
                    line,
                    format!("PIC {p}: X mixed with other symbols is not supported"),
                )
            }
            'Z' | ',' | '.' | '-' | '+' | '$' | '*' | 'B' | '0' | '/' | 'C' | 'R' | 'D' => {
                return err(
                    line,
                    format!(
                        "PIC {p}: edited pictures are not supported; send the number as 9s with V"
                    ),
                )
            }
            _ => return err(line, format!("PIC {p}: {c:?} is not a picture symbol")),
        }
    }
    if digits == 0 {
        return err(
            line,
            format!("PIC {p}: a numeric picture needs at least one 9"),
        );
    }
    if digits > 31 {
        return err(line, format!("PIC {p}: at most 31 digits"));
    }
    Ok(Pic::Number {
        digits: digits as u8,
        scale: scale as u8,
        signed,
    })
}
