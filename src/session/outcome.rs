//! `outcome`: one name for how a call went, chosen by the first `[[outcomes]]` rule that
//! matches the finished call. The defaults name what FusionPBX's call records and call-centre
//! reports call them; engineers who count differently write their own list.

use serde::{Deserialize, Serialize};

use super::timeline::SegmentKind;
use crate::problem::{Problem, Problems};

/// One `[[outcomes]]` rule: a name and conditions, all of which must hold (a condition left
/// out holds always).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeRule {
    /// The outcome's name (`answered`, `abandoned_in_queue`…).
    pub name: String,
    /// A person or the far end talked with the caller (`ans`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered: Option<bool>,
    /// Answered with less than `[sessions] short_talk` of talk (`short`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short: Option<bool>,
    /// The caller gave up while a phone rang, within `[sessions] abandon_ring` (`aban`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abandoned: Option<bool>,
    /// The caller reached voicemail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voicemail: Option<bool>,
    /// Some phone, agent or far end rang.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rang: Option<bool>,
    /// The caller waited in a call-centre queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<bool>,
    /// The call's last timeline segment is one of these (`ring`, `queue`, `ivr`…).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ended_in: Vec<SegmentKind>,
    /// The caller's or a rung leg's hangup cause is one of these (`USER_BUSY`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<String>,
    /// The call's `dir` is one of these (1 internal, 2 incoming, 3 outgoing, 4 both).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dir: Vec<u8>,
}

impl OutcomeRule {
    fn named(name: &str) -> OutcomeRule {
        OutcomeRule {
            name: name.into(),
            answered: None,
            short: None,
            abandoned: None,
            voicemail: None,
            rang: None,
            queued: None,
            ended_in: Vec::new(),
            causes: Vec::new(),
            dir: Vec::new(),
        }
    }

    fn matches(&self, f: &OutcomeFacts) -> bool {
        let flag = |want: Option<bool>, have: bool| want.is_none_or(|w| w == have);
        flag(self.answered, f.answered)
            && flag(self.short, f.short)
            && flag(self.abandoned, f.abandoned)
            && flag(self.voicemail, f.voicemail)
            && flag(self.rang, f.rang)
            && flag(self.queued, f.queued)
            && (self.ended_in.is_empty() || self.ended_in.contains(&f.ended_in))
            && (self.causes.is_empty() || f.causes.iter().any(|c| self.causes.contains(c)))
            && (self.dir.is_empty() || self.dir.contains(&f.direction))
    }
}

/// The rules used when the configuration has none, first match wins.
pub(crate) fn default_rules() -> Vec<OutcomeRule> {
    let rule = OutcomeRule::named;
    vec![
        OutcomeRule {
            answered: Some(true),
            short: Some(true),
            ..rule("short")
        },
        OutcomeRule {
            answered: Some(true),
            ..rule("answered")
        },
        OutcomeRule {
            voicemail: Some(true),
            ..rule("voicemail")
        },
        OutcomeRule {
            queued: Some(true),
            ..rule("abandoned_in_queue")
        },
        OutcomeRule {
            ended_in: vec![SegmentKind::Ivr],
            ..rule("abandoned_in_ivr")
        },
        OutcomeRule {
            causes: vec!["USER_BUSY".into()],
            ..rule("busy")
        },
        OutcomeRule {
            ended_in: vec![SegmentKind::Ring],
            causes: vec!["ORIGINATOR_CANCEL".into(), "NORMAL_CLEARING".into()],
            ..rule("abandoned_ringing")
        },
        OutcomeRule {
            rang: Some(true),
            ..rule("no_answer")
        },
        rule("failed"),
    ]
}

/// What the rules look at, read from a finished call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutcomeFacts {
    pub(crate) answered: bool,
    pub(crate) short: bool,
    pub(crate) abandoned: bool,
    pub(crate) voicemail: bool,
    pub(crate) rang: bool,
    pub(crate) queued: bool,
    pub(crate) ended_in: SegmentKind,
    pub(crate) causes: Vec<String>,
    pub(crate) direction: u8,
}

/// The compiled rules.
#[derive(Debug, Clone)]
pub struct Outcomes(Vec<OutcomeRule>);

impl Default for Outcomes {
    fn default() -> Self {
        Outcomes(default_rules())
    }
}

impl Outcomes {
    /// `rules`, or the defaults when there are none; every problem by key path.
    pub fn new(rules: &[OutcomeRule]) -> Result<Outcomes, Vec<Problem>> {
        let mut bad = Problems::default();
        for (i, r) in rules.iter().enumerate() {
            if r.name.trim().is_empty() {
                bad.add(format!("outcomes[{i}].name"), "must not be empty");
            }
            if let Some(d) = r.dir.iter().find(|d| !(1..=4).contains(*d)) {
                bad.add(
                    format!("outcomes[{i}].dir"),
                    format!("{d} is not a direction (1-4)"),
                );
            }
        }
        let rules = if rules.is_empty() {
            default_rules()
        } else {
            rules.to_vec()
        };
        bad.or(Outcomes(rules))
    }

    /// The name of the first rule `facts` match; none when no rule does.
    pub(crate) fn name(&self, facts: &OutcomeFacts) -> Option<&str> {
        self.0
            .iter()
            .find(|r| r.matches(facts))
            .map(|r| r.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> OutcomeFacts {
        OutcomeFacts {
            answered: false,
            short: false,
            abandoned: false,
            voicemail: false,
            rang: false,
            queued: false,
            ended_in: SegmentKind::Setup,
            causes: vec!["NORMAL_CLEARING".into()],
            direction: 2,
        }
    }

    #[test]
    fn the_first_matching_default_names_the_call() {
        let o = Outcomes::default();
        let name = |f: OutcomeFacts| o.name(&f).unwrap().to_owned();
        assert_eq!(name(facts()), "failed");
        let answered = OutcomeFacts {
            answered: true,
            rang: true,
            ended_in: SegmentKind::Talk,
            ..facts()
        };
        assert_eq!(name(answered.clone()), "answered");
        assert_eq!(
            name(OutcomeFacts {
                short: true,
                ..answered
            }),
            "short"
        );
        // Busy, then voicemail: the caller was taken by voicemail.
        let busy = OutcomeFacts {
            rang: true,
            causes: vec!["NORMAL_CLEARING".into(), "USER_BUSY".into()],
            ..facts()
        };
        assert_eq!(name(busy.clone()), "busy");
        assert_eq!(
            name(OutcomeFacts {
                voicemail: true,
                ended_in: SegmentKind::Voicemail,
                ..busy
            }),
            "voicemail"
        );
        let ringing = OutcomeFacts {
            rang: true,
            ended_in: SegmentKind::Ring,
            causes: vec!["ORIGINATOR_CANCEL".into()],
            ..facts()
        };
        assert_eq!(name(ringing.clone()), "abandoned_ringing");
        assert_eq!(
            name(OutcomeFacts {
                causes: vec!["NO_ANSWER".into()],
                ..ringing.clone()
            }),
            "no_answer"
        );
        assert_eq!(
            name(OutcomeFacts {
                ended_in: SegmentKind::Ivr,
                ..facts()
            }),
            "abandoned_in_ivr"
        );
        // An agent ringing while the caller waits in the queue: abandoned in the queue.
        assert_eq!(
            name(OutcomeFacts {
                queued: true,
                ..ringing
            }),
            "abandoned_in_queue"
        );
    }

    #[test]
    fn configured_rules_replace_the_defaults_and_are_checked() {
        let rules: Vec<OutcomeRule> = serde_json::from_str(
            r#"[{ "name": "inbound_missed", "answered": false, "dir": [2, 4] }, { "name": "other" }]"#,
        )
        .unwrap();
        let o = Outcomes::new(&rules).unwrap();
        assert_eq!(o.name(&facts()), Some("inbound_missed"));
        assert_eq!(
            o.name(&OutcomeFacts {
                direction: 3,
                ..facts()
            }),
            Some("other")
        );
        let bad = Outcomes::new(&[OutcomeRule {
            dir: vec![7],
            ..OutcomeRule::named(" ")
        }])
        .unwrap_err();
        let paths: Vec<&str> = bad.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["outcomes[0].name", "outcomes[0].dir"]);
    }
}
