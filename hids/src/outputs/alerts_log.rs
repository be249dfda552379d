//! `alerts.log`: OSSEC's text layout, one entry per alert, for operators who read or grep it.

use std::sync::Arc;

use super::format::alerts_log_entry;
use super::rotate::RotatingFile;
use super::{Delivery, Output, Pending, Selector};
use crate::config::AlertFileConfig;

/// The `alerts.log` output.
pub struct AlertsLog {
    name: String,
    file: RotatingFile,
}

impl AlertsLog {
    pub fn new(cfg: &AlertFileConfig) -> AlertsLog {
        AlertsLog {
            name: "alerts.log".to_string(),
            file: RotatingFile::new(cfg),
        }
    }
}

impl Output for AlertsLog {
    fn name(&self) -> &str {
        &self.name
    }

    fn selector(&self) -> Selector {
        Arc::new(|r| !r.rule.options.no_log)
    }

    fn deliver(&mut self, batch: &[Pending]) -> Delivery {
        let entries: Vec<String> = batch.iter().map(|p| alerts_log_entry(&p.record)).collect();
        super::write_file_batch(&mut self.file, &entries, batch)
    }
}
