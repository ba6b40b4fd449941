//! A tiny parser for the flat JSON objects `process_bench.py` prints, one per line:
//! `{"key": "string", "other": 1.5}`. Nested objects and arrays are not supported (the
//! script never prints them); `true`, `false` and `null` parse as [`Value::Other`].

use std::iter::Peekable;
use std::str::Chars;

/// A value of a flat JSON object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// A string.
    Str(String),
    /// A number.
    Num(f64),
    /// `true`, `false` or `null`.
    Other,
}

impl Value {
    /// The string, if this is one.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Num(n) => Some(*n),
            _ => None,
        }
    }
}

/// The members of one flat object, in order; `None` if `line` is not one.
pub(crate) fn parse_flat_object(line: &str) -> Option<Vec<(String, Value)>> {
    let mut it = line.chars().peekable();
    skip_ws(&mut it);
    expect(&mut it, '{')?;
    let mut members = Vec::new();
    skip_ws(&mut it);
    if it.peek() == Some(&'}') {
        it.next();
    } else {
        loop {
            skip_ws(&mut it);
            expect(&mut it, '"')?;
            let key = string_body(&mut it)?;
            skip_ws(&mut it);
            expect(&mut it, ':')?;
            skip_ws(&mut it);
            let value = value(&mut it)?;
            members.push((key, value));
            skip_ws(&mut it);
            match it.next()? {
                ',' => continue,
                '}' => break,
                _ => return None,
            }
        }
    }
    skip_ws(&mut it);
    it.next().is_none().then_some(members)
}

/// The value of `key` in `members`.
pub(crate) fn get<'a>(members: &'a [(String, Value)], key: &str) -> Option<&'a Value> {
    members.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn skip_ws(it: &mut Peekable<Chars<'_>>) {
    while it.peek().is_some_and(|c| c.is_ascii_whitespace()) {
        it.next();
    }
}

fn expect(it: &mut Peekable<Chars<'_>>, c: char) -> Option<()> {
    (it.next()? == c).then_some(())
}

/// The rest of a string whose opening quote has been read.
fn string_body(it: &mut Peekable<Chars<'_>>) -> Option<String> {
    let mut s = String::new();
    loop {
        match it.next()? {
            '"' => return Some(s),
            '\\' => match it.next()? {
                '"' => s.push('"'),
                '\\' => s.push('\\'),
                '/' => s.push('/'),
                'b' => s.push('\u{8}'),
                'f' => s.push('\u{c}'),
                'n' => s.push('\n'),
                'r' => s.push('\r'),
                't' => s.push('\t'),
                'u' => {
                    let hex: String = (0..4).map(|_| it.next()).collect::<Option<_>>()?;
                    let code = u32::from_str_radix(&hex, 16).ok()?;
                    // Surrogate pairs are not needed for our keys and values.
                    s.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                }
                _ => return None,
            },
            c => s.push(c),
        }
    }
}

fn value(it: &mut Peekable<Chars<'_>>) -> Option<Value> {
    match *it.peek()? {
        '"' => {
            it.next();
            string_body(it).map(Value::Str)
        }
        c if c == '-' || c.is_ascii_digit() => {
            let mut n = String::new();
            while let Some(&c) = it.peek() {
                if c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E') {
                    n.push(c);
                    it.next();
                } else {
                    break;
                }
            }
            n.parse().ok().map(Value::Num)
        }
        c if c.is_ascii_alphabetic() => {
            let mut word = String::new();
            while it.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
                word.push(it.next()?);
            }
            matches!(word.as_str(), "true" | "false" | "null").then_some(Value::Other)
        }
        _ => None,
    }
}
