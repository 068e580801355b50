//! Header blocks: `Name: value` lines kept as byte spans into the frame they came from.
//!
//! A header block is parsed once into a list of spans; names and values are never copied.
//! A value is percent-decoded only when it is read, and only when it contains a `%`, so the
//! hundreds of headers of a channel event that nobody looks at cost nothing beyond their span.

use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;
use nom::bytes::complete::take_until;
use nom::IResult;
use nom::Parser;
use percent_encoding::percent_decode;

/// The value FreeSWITCH writes for a variable that is not set.
pub(crate) const UNDEFINED: &str = "_undef_";
/// The prefix of a FreeSWITCH array value: `ARRAY::a|:b|:c`.
pub(crate) const ARRAY_PREFIX: &str = "ARRAY::";
/// The separator between the elements of a FreeSWITCH array value.
pub(crate) const ARRAY_SEPARATOR: &str = "|:";

/// A byte range inside a header block's buffer. `u32` keeps an entry at 16 bytes; the codec
/// refuses frames larger than 4 GiB long before they get here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    name: Span,
    value: Span,
}

/// The most header lines one block may have. FreeSWITCH's events carry a few hundred (a
/// channel with many variables, a few thousand); each line costs an index entry, so a block of
/// tiny lines must not turn a bounded frame into an unbounded index.
pub(crate) const MAX_HEADERS: usize = 65_536;

/// Why a header block could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A line with no `:` separator.
    #[error("header line {line} has no ':' separator")]
    NoSeparator {
        /// 1-based line number inside the block.
        line: usize,
    },
    /// More lines than [`MAX_HEADERS`].
    #[error("more than {MAX_HEADERS} header lines")]
    TooMany,
    /// A line whose name is empty (`: value`).
    #[error("header line {line} has an empty name")]
    EmptyName {
        /// 1-based line number inside the block.
        line: usize,
    },
}

/// An ordered list of headers over a shared buffer. Duplicate names are kept in order.
#[derive(Clone)]
pub struct Headers {
    buf: Bytes,
    entries: Vec<Entry>,
    /// Whether values are percent-encoded (event headers) or raw (envelope headers).
    encoded: bool,
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// One header line, split on the first `:`, value with leading spaces removed.
fn header_line(input: &[u8]) -> IResult<&[u8], &[u8]> {
    let (rest, line) = take_until("\n").parse(input)?;
    Ok((&rest[1..], line))
}

impl Headers {
    /// Parses `block` (lines ending in `\n`; a trailing blank line is not required) as a header
    /// block over `buf`, where `block` is `buf[offset..offset + block.len()]`.
    ///
    /// `encoded` says whether values are percent-encoded (true for event headers).
    pub fn parse(buf: Bytes, block: Range<usize>, encoded: bool) -> Result<Self, HeaderError> {
        let mut entries = Vec::with_capacity(estimate_lines(&buf[block.clone()]).min(MAX_HEADERS));
        let base = block.start;
        let mut input = &buf[block];
        let mut line_no = 0;
        // A final line without '\n' still counts: callers hand over the block without its
        // terminator when they have already split on "\n\n".
        while !input.is_empty() {
            line_no += 1;
            let (rest, line) = match header_line(input) {
                Ok(ok) => ok,
                Err(_) => (&input[input.len()..], input),
            };
            let line_start = base + (line.as_ptr() as usize - buf[base..].as_ptr() as usize);
            input = rest;
            let line = strip_cr(line);
            if line.is_empty() {
                // Blank lines inside a block only occur when a caller passes the terminator.
                continue;
            }
            let colon =
                memchr::memchr(b':', line).ok_or(HeaderError::NoSeparator { line: line_no })?;
            if colon == 0 {
                return Err(HeaderError::EmptyName { line: line_no });
            }
            if entries.len() == MAX_HEADERS {
                return Err(HeaderError::TooMany);
            }
            let mut value_start = colon + 1;
            while value_start < line.len() && line[value_start] == b' ' {
                value_start += 1;
            }
            entries.push(Entry {
                name: span(line_start, line_start + colon),
                value: span(line_start + value_start, line_start + line.len()),
            });
        }
        Ok(Headers {
            buf,
            entries,
            encoded,
        })
    }

    /// Builds headers from already-decoded name/value pairs (the JSON and XML formats).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut text = Vec::new();
        let mut entries = Vec::new();
        for (name, value) in pairs {
            let n0 = text.len();
            text.extend_from_slice(name.as_bytes());
            let v0 = text.len();
            text.extend_from_slice(value.as_bytes());
            entries.push(Entry {
                name: span(n0, v0),
                value: span(v0, text.len()),
            });
        }
        Headers {
            buf: Bytes::from(text),
            entries,
            encoded: false,
        }
    }

    /// The same headers, read as percent-encoded (or not).
    pub fn with_encoding(mut self, encoded: bool) -> Self {
        self.encoded = encoded;
        self
    }

    /// The bytes the headers were parsed from.
    pub(crate) fn buffer(&self) -> &Bytes {
        &self.buf
    }

    /// The bytes this holds: its buffer (shared with the frame it came from) and its index.
    pub fn memory(&self) -> usize {
        self.buf.len() + self.entries.capacity() * std::mem::size_of::<Entry>()
    }

    /// How many header lines there are (duplicates included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The header names and decoded values, in order, duplicates included.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Cow<'_, str>)> + '_ {
        self.entries
            .iter()
            .map(move |e| (self.name_of(e), self.decode(e.value)))
    }

    /// The header names in order with their positions, values left undecoded: for callers
    /// that look at many names but need few values (see [`Headers::value_at`]).
    pub fn names(&self) -> impl Iterator<Item = (usize, &str)> + '_ {
        self.entries
            .iter()
            .enumerate()
            .map(move |(i, e)| (i, self.name_of(e)))
    }

    /// The decoded value at a position from [`Headers::names`]; `_undef_` reads as absent.
    pub fn value_at(&self, index: usize) -> Option<Cow<'_, str>> {
        let e = self.entries.get(index)?;
        let v = self.decode(e.value);
        (v != UNDEFINED).then_some(v)
    }

    /// The raw (still encoded) bytes of a header's value.
    pub fn get_raw(&self, name: &str) -> Option<&[u8]> {
        self.find(name).map(|e| &self.buf[e.value.range()])
    }

    /// A header's decoded value. Names match case-insensitively, an exact-case match winning;
    /// with duplicates the last one wins (a PRIVATE_COMMAND's real `Event-Name` is its second).
    /// FreeSWITCH's `_undef_` reads as absent.
    pub fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        let e = self.find(name)?;
        let v = self.decode(e.value);
        (v != UNDEFINED).then_some(v)
    }

    /// Every value of a header: the elements of an `ARRAY::a|:b` value, or the single value.
    pub fn get_list(&self, name: &str) -> Option<Vec<String>> {
        self.get(name).map(|v| split_array(&v))
    }

    /// Whether a header is present (even as `_undef_`).
    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    fn name_of(&self, e: &Entry) -> &str {
        // Names are ASCII tokens in practice; a non-UTF-8 name is shown lossily as empty.
        std::str::from_utf8(&self.buf[e.name.range()]).unwrap_or("")
    }

    fn find(&self, name: &str) -> Option<&Entry> {
        let wanted = name.as_bytes();
        let mut fallback = None;
        for e in self.entries.iter().rev() {
            let n = &self.buf[e.name.range()];
            if n.len() != wanted.len() {
                continue;
            }
            if n == wanted {
                return Some(e);
            }
            if fallback.is_none() && n.eq_ignore_ascii_case(wanted) {
                fallback = Some(e);
            }
        }
        fallback
    }

    fn decode(&self, s: Span) -> Cow<'_, str> {
        let raw = &self.buf[s.range()];
        if self.encoded && memchr::memchr(b'%', raw).is_some() {
            // percent_decode leaves a stray '%' (not followed by two hex digits) as it is.
            match percent_decode(raw).decode_utf8() {
                Ok(s) => Cow::Owned(s.into_owned()),
                Err(_) => Cow::Owned(
                    String::from_utf8_lossy(&percent_decode(raw).collect::<Vec<u8>>()).into_owned(),
                ),
            }
        } else {
            String::from_utf8_lossy(raw)
        }
    }
}

/// Splits a FreeSWITCH array value into its elements; a plain value is a one-element list.
pub fn split_array(v: &str) -> Vec<String> {
    match v.strip_prefix(ARRAY_PREFIX) {
        Some(rest) => rest.split(ARRAY_SEPARATOR).map(str::to_owned).collect(),
        None => vec![v.to_owned()],
    }
}

/// Joins elements the way FreeSWITCH stores an array header; one element has no prefix.
pub(crate) fn join_array<S: AsRef<str>>(items: &[S]) -> String {
    match items {
        [one] => one.as_ref().to_owned(),
        _ => {
            let mut s = String::from(ARRAY_PREFIX);
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    s.push_str(ARRAY_SEPARATOR);
                }
                s.push_str(item.as_ref());
            }
            s
        }
    }
}

fn span(start: usize, end: usize) -> Span {
    Span {
        start: start as u32,
        end: end as u32,
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    match line.last() {
        Some(b'\r') => &line[..line.len() - 1],
        _ => line,
    }
}

/// A cheap upper-bound guess of the line count so the entry vector allocates once.
fn estimate_lines(block: &[u8]) -> usize {
    // Channel events average ~30 bytes a line; over-reserving a little beats regrowing.
    block.len() / 24 + 4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, encoded: bool) -> Headers {
        let b = Bytes::copy_from_slice(text.as_bytes());
        let len = b.len();
        Headers::parse(b, 0..len, encoded).unwrap()
    }

    #[test]
    fn splits_on_first_colon_only() {
        let h = parse("Reply-Text: +OK Job-UUID: 7f4db78a\n", false);
        assert_eq!(h.get("Reply-Text").unwrap(), "+OK Job-UUID: 7f4db78a");
    }

    #[test]
    fn percent_decoding_only_for_encoded_blocks() {
        let h = parse("Caller-Caller-ID-Number: %2B447700900123\n", true);
        assert_eq!(h.get("Caller-Caller-ID-Number").unwrap(), "+447700900123");
        let raw = parse("Caller-Caller-ID-Number: %2B447700900123\n", false);
        assert_eq!(
            raw.get("Caller-Caller-ID-Number").unwrap(),
            "%2B447700900123"
        );
    }

    #[test]
    fn multi_line_values_and_stray_percent() {
        let h = parse("A: line1%0Aline2\nB: 100%\nC: 50%zz\n", true);
        assert_eq!(h.get("A").unwrap(), "line1\nline2");
        assert_eq!(h.get("B").unwrap(), "100%");
        assert_eq!(h.get("C").unwrap(), "50%zz");
    }

    #[test]
    fn non_utf8_bytes_decode_lossily() {
        let h = parse("X: caf%E9\n", true);
        assert_eq!(h.get("X").unwrap(), "caf\u{FFFD}");
    }

    #[test]
    fn undef_reads_as_absent_but_is_present() {
        let h = parse("variable_foo: _undef_\n", true);
        assert!(h.get("variable_foo").is_none());
        assert!(h.contains("variable_foo"));
    }

    #[test]
    fn arrays_split_and_single_element_has_no_prefix() {
        let h = parse(
            "variable_x: ARRAY%3A%3A6001%7C%3A6002\nvariable_y: one\n",
            true,
        );
        assert_eq!(h.get_list("variable_x").unwrap(), vec!["6001", "6002"]);
        assert_eq!(h.get_list("variable_y").unwrap(), vec!["one"]);
        assert_eq!(join_array(&["one"]), "one");
        assert_eq!(join_array(&["a", "b"]), "ARRAY::a|:b");
    }

    #[test]
    fn case_insensitive_names_exact_case_wins_last_duplicate_wins() {
        let h = parse(
            "Event-Name: COMMAND\nvariable_Foo: upper\nvariable_foo: lower\nEvent-Name: PRIVATE_COMMAND\n",
            true,
        );
        assert_eq!(h.get("event-name").unwrap(), "PRIVATE_COMMAND");
        assert_eq!(h.get("variable_Foo").unwrap(), "upper");
        assert_eq!(h.get("variable_foo").unwrap(), "lower");
        assert_eq!(h.get("VARIABLE_FOO").unwrap(), "lower");
        assert_eq!(h.len(), 4);
    }

    #[test]
    fn missing_separator_is_an_error() {
        let b = Bytes::from_static(b"Good: 1\ngarbage\n");
        let err = Headers::parse(b.clone(), 0..b.len(), true).unwrap_err();
        assert_eq!(err, HeaderError::NoSeparator { line: 2 });
    }

    #[test]
    fn a_block_of_tiny_lines_is_refused_past_the_header_cap() {
        let at_cap = Bytes::from("a:\n".repeat(MAX_HEADERS));
        let h = Headers::parse(at_cap.clone(), 0..at_cap.len(), true).unwrap();
        assert_eq!(h.len(), MAX_HEADERS);
        // The index stays proportional to the cap, not to the block.
        assert!(h.memory() <= at_cap.len() + 2 * MAX_HEADERS * std::mem::size_of::<Entry>());
        let over = Bytes::from("a:\n".repeat(MAX_HEADERS + 1));
        let err = Headers::parse(over.clone(), 0..over.len(), true).unwrap_err();
        assert_eq!(err, HeaderError::TooMany);
    }

    #[test]
    fn last_line_without_newline_and_value_without_space() {
        let h = parse("A:1\nB:  two", false);
        assert_eq!(h.get("A").unwrap(), "1");
        assert_eq!(h.get("B").unwrap(), "two");
    }
}
