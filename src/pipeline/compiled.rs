//! The configuration, compiled: one pass used by `check-config`, `run`, a reload, `replay`,
//! `explain` and `demo`, so checking and running can never disagree.

use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::hooks::WebhookSet;
use crate::problem::{Problem, Problems};
use crate::routing::server::RouteTable;
use crate::session::{Sections, Settings};

/// What the pipeline runs on: each part compiled from its sections.
#[derive(Debug)]
pub struct Compiled {
    /// Call assembly: `[sessions]`, `[mapping]`, `[numbers]`, `[directory]`, `[rates]`.
    pub settings: Arc<Settings>,
    /// `[[webhooks]]` under `[egress]`.
    pub hooks: Arc<WebhookSet>,
    /// `[[routes]]` under `[routing]`.
    pub routes: Arc<RouteTable>,
}

impl Compiled {
    /// Compiles every section; every problem found comes back, each with its key path.
    pub fn new(cfg: &Config) -> Result<Compiled, Vec<Problem>> {
        let mut bad = Problems::default();
        // Sections that are only checked here: their parts take them as they are.
        bad.extend(cfg.freeswitch.check());
        bad.extend(cfg.log.check());
        bad.extend(cfg.store.check());
        bad.extend(cfg.admin.check());
        bad.extend(cfg.call_store.check());
        bad.extend(cfg.nats.check());
        bad.extend(cfg.worker.check());
        let settings = Settings::new(Sections {
            sessions: &cfg.sessions,
            mapping: &cfg.mapping,
            numbers: &cfg.numbers,
            directory: &cfg.directory,
            rates: &cfg.rates,
            outcomes: &cfg.outcomes,
            tenants: &cfg.tenants,
        })
        .map_err(|p| bad.extend(p))
        .ok();
        // Webhook filters read numbers as calls will; with a bad [numbers] they still get
        // checked, under the defaults.
        let fallback;
        let numbers = match &settings {
            Some(s) => &s.numbers,
            None => {
                fallback = crate::session::numbers::NumberReader::new(&Default::default());
                &fallback
            }
        };
        let hooks = WebhookSet::compile(&cfg.webhooks, &cfg.egress, numbers)
            .map_err(|p| bad.extend(p))
            .ok();
        let routes = RouteTable::compile(&cfg.routing, &cfg.routes)
            .map_err(|p| bad.extend(p))
            .ok();
        match (settings, hooks, routes) {
            (Some(settings), Some(hooks), Some(routes)) => bad.or(Compiled {
                settings: Arc::new(settings),
                hooks: Arc::new(hooks),
                routes: Arc::new(routes),
            }),
            _ => Err(bad.into_vec()),
        }
    }

    /// Reads the file (and the environment) and compiles it: every problem, from a type
    /// error to a missing rate file, in one list.
    pub fn load(path: Option<&Path>) -> Result<(Config, Compiled), Vec<Problem>> {
        let (cfg, mut problems) = Config::read(path);
        match Compiled::new(&cfg) {
            Ok(compiled) if problems.is_empty() => Ok((cfg, compiled)),
            Ok(_) => Err(problems),
            Err(more) => {
                problems.extend(crate::config::name_variables(more));
                Err(problems)
            }
        }
    }
}
