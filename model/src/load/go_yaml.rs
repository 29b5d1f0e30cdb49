//! Where Kubernetes' YAML reader (go-yaml v2 behind sigs.k8s.io/yaml) and YAML 1.2 disagree on a
//! plain scalar, the text is rewritten so the 1.2 parser reads what Kubernetes reads.
//!
//! One case matters for Istio configs: inside `[…]` or `{…}`, go-yaml ends a plain scalar at
//! `:` only when a blank follows, so `[1.2.3.4, 2001:db8::]` is two addresses; YAML 1.2 also ends
//! it at a `:` before `,`, `]` or `}`, and reads `2001:db8::` as the key of a one-entry mapping.
//! Such a scalar is quoted. Lines do not move, so diagnostics keep their line numbers.

use std::borrow::Cow;

/// `text` with every flow-context plain scalar that go-yaml ends in `:` quoted.
pub fn quote_flow_colons(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    if !b.windows(2).any(|w| w[0] == b':' && matches!(w[1], b',' | b']' | b'}')) {
        return Cow::Borrowed(text);
    }
    let spans = Scanner::new(b).scalars_to_quote();
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 4 * spans.len());
    let mut at = 0;
    for (start, end) in spans {
        out.push_str(&text[at..start]);
        out.push('\'');
        out.push_str(&text[start..end].replace('\'', "''"));
        out.push('\'');
        at = end;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

fn is_blank(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_flow_indicator(c: u8) -> bool {
    matches!(c, b',' | b'?' | b'[' | b']' | b'{' | b'}')
}

/// Just enough of a YAML tokenizer to know, at each byte, whether it is in flow context and
/// outside quotes, comments and block scalars.
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    flow: usize,
    out: Vec<(usize, usize)>,
}

impl<'a> Scanner<'a> {
    fn new(b: &'a [u8]) -> Self {
        Scanner {
            b,
            i: 0,
            flow: 0,
            out: Vec::new(),
        }
    }

    fn at(&self, i: usize) -> u8 {
        self.b.get(i).copied().unwrap_or(b'\n')
    }

    fn scalars_to_quote(mut self) -> Vec<(usize, usize)> {
        while self.i < self.b.len() {
            self.token();
        }
        self.out
    }

    /// Reads one token (or blanks) starting at `self.i`; always advances.
    fn token(&mut self) {
        let c = self.at(self.i);
        let after_blank = self.i == 0 || is_blank(self.at(self.i - 1));
        match c {
            c if is_blank(c) => self.i += 1,
            b'#' if after_blank => self.skip_line(),
            b'[' | b'{' => {
                self.flow += 1;
                self.i += 1;
            }
            b']' | b'}' => {
                self.flow = self.flow.saturating_sub(1);
                self.i += 1;
            }
            b',' if self.flow > 0 => self.i += 1,
            b'\'' | b'"' => self.quoted(c),
            b'|' | b'>' if self.flow == 0 => self.block_scalar(),
            b'&' | b'*' | b'!' => {
                while !is_blank(self.at(self.i)) && self.i < self.b.len() {
                    self.i += 1;
                }
            }
            b'-' | b'?' | b':' if is_blank(self.at(self.i + 1)) => self.i += 1,
            b':' if self.flow > 0 => self.i += 1,
            _ => self.plain(),
        }
    }

    fn skip_line(&mut self) {
        while self.i < self.b.len() && self.b[self.i] != b'\n' {
            self.i += 1;
        }
    }

    fn quoted(&mut self, q: u8) {
        self.i += 1;
        while self.i < self.b.len() {
            let c = self.b[self.i];
            if q == b'"' && c == b'\\' {
                self.i += 2;
                continue;
            }
            self.i += 1;
            if c == q {
                if q == b'\'' && self.at(self.i) == b'\'' && self.i < self.b.len() {
                    self.i += 1;
                    continue;
                }
                return;
            }
        }
    }

    /// `|` or `>`: the rest of the line, then every line more indented than this one.
    fn block_scalar(&mut self) {
        let line_start = self.b[..self.i].iter().rposition(|&c| c == b'\n').map_or(0, |p| p + 1);
        let indent = self.b[line_start..].iter().take_while(|&&c| c == b' ').count();
        self.skip_line();
        while self.i < self.b.len() {
            let next = self.i + 1;
            let spaces = self.b[next..].iter().take_while(|&&c| c == b' ').count();
            let blank_line = matches!(self.at(next + spaces), b'\n' | b'\r');
            if !blank_line && spaces <= indent {
                return;
            }
            self.i = next;
            self.skip_line();
        }
    }

    /// A plain scalar to the end go-yaml gives it (within the line); in flow context, one that
    /// ends in `:` is recorded for quoting.
    fn plain(&mut self) {
        let start = self.i;
        let mut end = self.i;
        loop {
            let c = self.at(self.i);
            if self.i >= self.b.len() || c == b'\n' || c == b'\r' {
                break;
            }
            if c == b'#' && is_blank(self.at(self.i.wrapping_sub(1))) {
                break;
            }
            if c == b':' && is_blank(self.at(self.i + 1)) {
                break;
            }
            if self.flow > 0 && is_flow_indicator(c) {
                break;
            }
            self.i += 1;
            if !is_blank(c) {
                end = self.i;
            }
        }
        if self.flow > 0 && end > start && self.b[end - 1] == b':' {
            self.out.push((start, end));
        }
        self.i = self.i.max(start + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::quote_flow_colons;

    #[test]
    fn an_ipv6_address_ending_in_colons_in_a_flow_sequence_is_quoted() {
        assert_eq!(
            quote_flow_colons("a: [1.2.3.4, 001:db8::]\n"),
            "a: [1.2.3.4, '001:db8::']\n"
        );
        assert_eq!(quote_flow_colons("a: [2001:db8::, b]"), "a: ['2001:db8::', b]");
        assert_eq!(quote_flow_colons("a: {k: fe80::}"), "a: {k: 'fe80::'}");
        assert_eq!(quote_flow_colons("a: [x'y:]"), "a: ['x''y:']");
    }

    #[test]
    fn everything_else_is_left_alone() {
        for text in [
            "a: [1.2.3.4, '001:db8::']",
            "a: [\"001:db8::\"]",
            "a: [2001:db8::1, b]",
            "a: {b: c, d: e}",
            "a: b:]\n",
            "a: [b] # c:]\n",
            "a: |\n  [x:]\n  y:,\nb: c\n",
            "a: 'it''s [b:]'\n",
            "a: [\"q\\\"x:]\"]",
            "a: [b, c]",
        ] {
            assert_eq!(quote_flow_colons(text), text, "{text}");
        }
    }

    #[test]
    fn a_block_scalar_ends_at_the_first_line_not_more_indented() {
        assert_eq!(
            quote_flow_colons("a: |\n  x\n\n  y\nb: [c:]\n"),
            "a: |\n  x\n\n  y\nb: ['c:']\n"
        );
    }
}
