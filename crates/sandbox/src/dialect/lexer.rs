//! The lexer of the two query languages the dialects read (Salesforce's SOQL and Jira's
//! JQL): words, unquoted literals (numbers, dates, times), quoted strings, comparison
//! operators and commas, and a cursor over them. Each parser says what it accepts.

#[derive(Clone, PartialEq)]
pub(super) enum Token {
    /// A keyword or a field name.
    Word(String),
    /// An unquoted literal: a number, a date or a date-time (`2026-11-30T12:00:00Z`,
    /// `2026/11/30`, `-5d`).
    Literal(String),
    /// A quoted string, unescaped.
    Quoted(String),
    /// `=`, `!=` (also written `<>`), `<`, `<=`, `>`, `>=`.
    Op(&'static str),
    Comma,
}

impl Token {
    /// The token as it was written, for error messages.
    pub(super) fn text(&self) -> String {
        match self {
            Token::Word(text) | Token::Literal(text) => text.clone(),
            Token::Quoted(text) => format!("'{text}'"),
            Token::Op(op) => (*op).to_owned(),
            Token::Comma => ",".to_owned(),
        }
    }
}

/// The tokens of `text`, strings quoted with any of `quotes` (a backslash escapes).
pub(super) fn tokenize(text: &str, quotes: &[char]) -> Result<Tokens, String> {
    let chars: Vec<char> = text.chars().collect();
    let (mut tokens, mut i) = (Vec::new(), 0);
    let run = |from: usize, admit: &dyn Fn(char) -> bool| {
        let mut to = from;
        while to < chars.len() && admit(chars[to]) {
            to += 1;
        }
        (chars[from..to].iter().collect::<String>(), to)
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let (token, to) = match c {
            _ if c.is_whitespace() => {
                i += 1;
                continue;
            }
            ',' => (Token::Comma, i + 1),
            '=' => (Token::Op("="), i + 1),
            '!' if next == Some('=') => (Token::Op("!="), i + 2),
            '<' if next == Some('>') => (Token::Op("!="), i + 2),
            '<' if next == Some('=') => (Token::Op("<="), i + 2),
            '<' => (Token::Op("<"), i + 1),
            '>' if next == Some('=') => (Token::Op(">="), i + 2),
            '>' => (Token::Op(">"), i + 1),
            _ if quotes.contains(&c) => {
                let mut text = String::new();
                let mut to = i + 1;
                loop {
                    match chars.get(to) {
                        None => return Err("unterminated string literal".to_owned()),
                        Some('\\') => {
                            text.extend(chars.get(to + 1));
                            to += 2;
                        }
                        Some(&end) if end == c => break,
                        Some(&other) => {
                            text.push(other);
                            to += 1;
                        }
                    }
                }
                (Token::Quoted(text), to + 1)
            }
            _ if c.is_ascii_alphabetic() || c == '_' => {
                let (word, to) = run(i, &|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
                (Token::Word(word), to)
            }
            _ if c.is_ascii_digit() || c == '-' => {
                let (literal, to) = run(i, &|c| c.is_ascii_alphanumeric() || ":.+-/".contains(c));
                (Token::Literal(literal), to)
            }
            _ => return Err(format!("unexpected token: '{c}'")),
        };
        tokens.push(token);
        i = to;
    }
    Ok(Tokens { tokens, at: 0 })
}

/// A cursor over tokens.
pub(super) struct Tokens {
    tokens: Vec<Token>,
    at: usize,
}

impl Tokens {
    pub(super) fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    /// The next token, or the error of an unexpected end.
    pub(super) fn next(&mut self) -> Result<Token, String> {
        let token = self
            .peek()
            .cloned()
            .ok_or_else(|| "unexpected end of query".to_owned())?;
        self.at += 1;
        Ok(token)
    }

    /// The error for the token just taken by [`Tokens::next`], which was not wanted.
    pub(super) fn unwanted(&mut self) -> String {
        self.at = self.at.saturating_sub(1);
        self.unexpected()
    }

    /// The error for the next token (or the end).
    pub(super) fn unexpected(&self) -> String {
        match self.peek() {
            Some(token) => format!("unexpected token: '{}'", token.text()),
            None => "unexpected end of query".to_owned(),
        }
    }

    /// Takes `keyword` (case-insensitive) if it comes next.
    pub(super) fn keyword(&mut self, keyword: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword));
        if found {
            self.at += 1;
        }
        found
    }

    /// Takes `keyword`, or fails on what comes instead.
    pub(super) fn expect(&mut self, keyword: &str) -> Result<(), String> {
        match self.keyword(keyword) {
            true => Ok(()),
            false => Err(self.unexpected()),
        }
    }

    /// Takes a comma if one comes next.
    pub(super) fn comma(&mut self) -> bool {
        let found = self.peek() == Some(&Token::Comma);
        if found {
            self.at += 1;
        }
        found
    }

    /// A comparison operator.
    pub(super) fn op(&mut self) -> Result<&'static str, String> {
        match self.next()? {
            Token::Op(op) => Ok(op),
            _ => Err(self.unwanted()),
        }
    }

    /// `ASC` or `DESC` if one comes next: whether it is descending.
    pub(super) fn direction(&mut self) -> bool {
        match self.keyword("DESC") {
            true => true,
            false => {
                self.keyword("ASC");
                false
            }
        }
    }

    pub(super) fn at_end(&self) -> bool {
        self.peek().is_none()
    }
}

/// Whether `ordering` satisfies comparison operator `op`.
pub(super) fn compare(op: &str, ordering: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match op {
        "=" => ordering == Equal,
        "!=" => ordering != Equal,
        "<" => ordering == Less,
        "<=" => ordering != Greater,
        ">" => ordering == Greater,
        _ => ordering != Less,
    }
}
