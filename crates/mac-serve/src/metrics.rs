//! Counters and latency histograms, rendered in Prometheus's text format
//! at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (c, &le) in self.counts.iter_mut().zip(&BUCKETS) {
            if seconds <= le {
                *c += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    stored: u64,
    duplicates: u64,
    questions: u64,
    answer_batches: u64,
    bank_entries: u64,
}

/// What the server counts.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        // A poisoned lock only means a panic elsewhere while counting: the
        // counts are still usable.
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// One request on `route` answered with `status` after `elapsed`.
    pub fn request(&self, route: &str, status: u16, elapsed: Duration) {
        self.with(|m| {
            *m.requests.entry((route.to_string(), status)).or_default() += 1;
            m.latency
                .entry(route.to_string())
                .or_default()
                .observe(elapsed.as_secs_f64());
        });
    }

    /// Documents stored and found to be duplicates by one ingest.
    pub fn ingested(&self, stored: u64, duplicates: u64) {
        self.with(|m| {
            m.stored += stored;
            m.duplicates += duplicates;
        });
    }

    /// One batch of `questions` answered together.
    pub fn answered(&self, questions: u64) {
        self.with(|m| {
            m.questions += questions;
            m.answer_batches += 1;
        });
    }

    /// The bank's size now.
    pub fn bank_entries(&self, entries: u64) {
        self.with(|m| m.bank_entries = entries);
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        self.with(|m| {
            let mut s = String::new();
            let _ = writeln!(s, "# HELP mac_http_requests_total HTTP requests by route and status.");
            let _ = writeln!(s, "# TYPE mac_http_requests_total counter");
            for ((route, status), n) in &m.requests {
                let _ = writeln!(
                    s,
                    "mac_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
            let _ = writeln!(s, "# HELP mac_http_request_duration_seconds Time to answer a request, by route.");
            let _ = writeln!(s, "# TYPE mac_http_request_duration_seconds histogram");
            for (route, h) in &m.latency {
                for (le, c) in BUCKETS.iter().zip(&h.counts) {
                    let _ = writeln!(
                        s,
                        "mac_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {c}"
                    );
                }
                let _ = writeln!(
                    s,
                    "mac_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(s, "mac_http_request_duration_seconds_sum{{route=\"{route}\"}} {}", h.sum);
                let _ = writeln!(s, "mac_http_request_duration_seconds_count{{route=\"{route}\"}} {}", h.count);
            }
            let _ = writeln!(s, "# HELP mac_bank_entries Documents in the memory bank.");
            let _ = writeln!(s, "# TYPE mac_bank_entries gauge");
            let _ = writeln!(s, "mac_bank_entries {}", m.bank_entries);
            let _ = writeln!(s, "# HELP mac_documents_ingested_total Documents received for ingest, by outcome.");
            let _ = writeln!(s, "# TYPE mac_documents_ingested_total counter");
            let _ = writeln!(s, "mac_documents_ingested_total{{outcome=\"stored\"}} {}", m.stored);
            let _ = writeln!(s, "mac_documents_ingested_total{{outcome=\"duplicate\"}} {}", m.duplicates);
            let _ = writeln!(s, "# HELP mac_questions_answered_total Questions answered from the bank.");
            let _ = writeln!(s, "# TYPE mac_questions_answered_total counter");
            let _ = writeln!(s, "mac_questions_answered_total {}", m.questions);
            let _ = writeln!(s, "# HELP mac_answer_batches_total LM batches the questions were answered in.");
            let _ = writeln!(s, "# TYPE mac_answer_batches_total counter");
            let _ = writeln!(s, "mac_answer_batches_total {}", m.answer_batches);
            s
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_rendered() {
        let m = Metrics::default();
        m.request("/v1/chat/completions", 200, Duration::from_millis(30));
        m.request("/v1/chat/completions", 200, Duration::from_secs(3));
        m.request("/v1/chat/completions", 400, Duration::from_millis(1));
        m.ingested(2, 1);
        m.answered(4);
        m.bank_entries(7);
        let text = m.render();
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("{needle} missing in\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_string()
        };
        let route = "route=\"/v1/chat/completions\"";
        assert_eq!(
            line(&format!(
                "mac_http_requests_total{{{route},status=\"200\"}}"
            )),
            "2"
        );
        assert_eq!(
            line(&format!(
                "mac_http_requests_total{{{route},status=\"400\"}}"
            )),
            "1"
        );
        assert_eq!(
            line(&format!(
                "mac_http_request_duration_seconds_bucket{{{route},le=\"0.005\"}}"
            )),
            "1"
        );
        assert_eq!(
            line(&format!(
                "mac_http_request_duration_seconds_bucket{{{route},le=\"0.05\"}}"
            )),
            "2"
        );
        assert_eq!(
            line(&format!(
                "mac_http_request_duration_seconds_bucket{{{route},le=\"5\"}}"
            )),
            "3"
        );
        assert_eq!(
            line(&format!(
                "mac_http_request_duration_seconds_count{{{route}}}"
            )),
            "3"
        );
        assert_eq!(
            line("mac_documents_ingested_total{outcome=\"stored\"}"),
            "2"
        );
        assert_eq!(line("mac_answer_batches_total"), "1");
        assert_eq!(line("mac_questions_answered_total"), "4");
        assert_eq!(line("mac_bank_entries"), "7");
    }
}
