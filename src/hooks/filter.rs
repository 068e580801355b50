//! Webhook filters: conditions on any CDR or session field, combined with AND.

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::template::text_of;

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Equal (numbers compare as numbers, anything else as text).
    Eq,
    /// Not equal.
    Ne,
    /// One of a list.
    In,
    /// Text starts with.
    Prefix,
    /// Text matches a regular expression.
    Regex,
    /// Numerically less than.
    Lt,
    /// Numerically greater than.
    Gt,
}

/// A filter as configured: `{ field = "dir", op = "eq", value = 2 }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// The field (a CDR field such as `dir`, a flat field such as `cli`, or `trigger`).
    pub field: String,
    /// The comparison.
    pub op: Op,
    /// What to compare with (a list for `in`).
    pub value: Value,
}

/// A compiled filter.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    field: String,
    test: Test,
}

#[derive(Debug, Clone)]
enum Test {
    Eq(Value, bool),
    In(Vec<Value>),
    Prefix(String),
    Regex(Regex),
    Lt(f64),
    Gt(f64),
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (number(a), number(b)) {
        (Some(x), Some(y)) if a.is_number() || b.is_number() => x == y,
        _ => text_of(a) == text_of(b),
    }
}

impl Filter {
    /// Compiles `cfg`; `known` says which field names exist.
    pub(crate) fn compile(
        cfg: &FilterConfig,
        known: impl Fn(&str) -> bool,
    ) -> Result<Filter, String> {
        if !known(&cfg.field) {
            return Err(format!("unknown field {:?}", cfg.field));
        }
        let num = || {
            number(&cfg.value)
                .ok_or_else(|| format!("{:?} needs a number, got {}", cfg.op, cfg.value))
        };
        let test = match cfg.op {
            Op::Eq | Op::Ne if cfg.value.is_array() || cfg.value.is_object() => {
                return Err("eq/ne compare with one value; use op = \"in\" for a list".into())
            }
            Op::Eq => Test::Eq(cfg.value.clone(), true),
            Op::Ne => Test::Eq(cfg.value.clone(), false),
            Op::In => match &cfg.value {
                Value::Array(items) if !items.is_empty() => Test::In(items.clone()),
                _ => return Err("in needs a non-empty list: value = [\"a\", \"b\"]".into()),
            },
            Op::Prefix => match &cfg.value {
                Value::String(s) => Test::Prefix(s.clone()),
                other => Test::Prefix(other.to_string()),
            },
            Op::Regex => {
                let Value::String(s) = &cfg.value else {
                    return Err("regex needs a string".into());
                };
                Test::Regex(Regex::new(s).map_err(|e| format!("bad regex: {e}"))?)
            }
            Op::Lt => Test::Lt(num()?),
            Op::Gt => Test::Gt(num()?),
        };
        Ok(Filter {
            field: cfg.field.clone(),
            test,
        })
    }

    /// Whether `fields` pass.
    pub(crate) fn matches(&self, fields: &Map<String, Value>) -> bool {
        let v = fields.get(&self.field).unwrap_or(&Value::Null);
        match &self.test {
            Test::Eq(want, eq) => same(v, want) == *eq,
            Test::In(list) => list.iter().any(|w| same(v, w)),
            Test::Prefix(p) => text_of(v).starts_with(p.as_str()),
            Test::Regex(r) => r.is_match(&text_of(v)),
            Test::Lt(x) => number(v).is_some_and(|n| n < *x),
            Test::Gt(x) => number(v).is_some_and(|n| n > *x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(field: &str, op: Op, value: Value) -> Result<Filter, String> {
        Filter::compile(
            &FilterConfig {
                field: field.into(),
                op,
                value,
            },
            |n| ["dir", "cliNum", "talk", "ddiName"].contains(&n),
        )
    }

    #[test]
    fn operators() {
        let fields = json!({"dir": 2, "cliNum": "+447700900900", "talk": 12})
            .as_object()
            .unwrap()
            .clone();
        let yes = |x: Filter| assert!(x.matches(&fields), "{x:?}");
        let no = |x: Filter| assert!(!x.matches(&fields), "{x:?}");
        yes(f("dir", Op::Eq, json!(2)).unwrap());
        yes(f("dir", Op::Eq, json!("2")).unwrap());
        no(f("dir", Op::Ne, json!(2)).unwrap());
        yes(f("dir", Op::In, json!([2, 4])).unwrap());
        yes(f("cliNum", Op::Prefix, json!("+44")).unwrap());
        yes(f("cliNum", Op::Regex, json!("^\\+447700")).unwrap());
        yes(f("talk", Op::Gt, json!(10)).unwrap());
        no(f("talk", Op::Lt, json!(10)).unwrap());
        // A missing field is empty: it is not less than anything.
        no(f("ddiName", Op::Lt, json!(10)).unwrap());
        yes(f("ddiName", Op::Ne, json!("x")).unwrap());
    }

    #[test]
    fn mistakes_are_caught_at_load() {
        assert!(f("dri", Op::Eq, json!(2))
            .unwrap_err()
            .contains("unknown field"));
        assert!(f("dir", Op::In, json!(2)).is_err());
        assert!(f("dir", Op::Eq, json!([2])).is_err());
        assert!(f("cliNum", Op::Regex, json!("("))
            .unwrap_err()
            .contains("bad regex"));
        assert!(f("talk", Op::Gt, json!("lots")).is_err());
    }
}
