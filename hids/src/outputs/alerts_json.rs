//! `alerts.json`: one JSON object per line (timestamp, rule, agent, location, decoder, data,
//! full_log, fim), ready for Filebeat, Logstash or Vector into Elasticsearch or OpenSearch.

use std::sync::Arc;

use super::format::json_line;
use super::rotate::RotatingFile;
use super::{Delivery, Output, Pending, Selector};
use crate::config::AlertFileConfig;

/// The `alerts.json` output.
pub struct AlertsJson {
    name: String,
    file: RotatingFile,
}

impl AlertsJson {
    pub fn new(cfg: &AlertFileConfig) -> AlertsJson {
        AlertsJson {
            name: "alerts.json".to_string(),
            file: RotatingFile::new(cfg),
        }
    }
}

impl Output for AlertsJson {
    fn name(&self) -> &str {
        &self.name
    }

    fn selector(&self) -> Selector {
        Arc::new(|r| !r.rule.options.no_log)
    }

    fn deliver(&mut self, batch: &[Pending]) -> Delivery {
        let entries: Vec<String> = batch
            .iter()
            .map(|p| {
                let mut l = json_line(&p.record);
                l.push('\n');
                l
            })
            .collect();
        super::write_file_batch(&mut self.file, &entries, batch)
    }
}
