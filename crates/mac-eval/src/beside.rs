//! Two memories in one report: the rows of another evaluation's memory
//! (say the paper's path) set beside this one's, when both answered the
//! same documents and questions.

use std::path::Path;

use anyhow::{ensure, Context, Result};

use crate::online::row_key;
use crate::EvalReport;

impl EvalReport {
    /// Reads the evaluation report in `dir` (its `report.json`).
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("report.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not an evaluation report", path.display()))
    }

    /// Adds `other`'s memory rows (its key and every row that starts with
    /// it: `mac`, `mac+prior`, `mac_unrelated_bank`, …) beside this
    /// report's; `from` names where they came from. Errors when the two
    /// evaluated the same memory or not the same documents and questions.
    pub fn add_beside(&mut self, other: &EvalReport, from: &Path) -> Result<()> {
        let (ours, theirs) = (row_key(&self.memory), row_key(&other.memory));
        ensure!(
            ours != theirs,
            "{}: also an evaluation of {}; set beside one of another memory",
            from.display(),
            other.memory
        );
        let questions = |r: &EvalReport, key: &str| r.methods.get(key).map(|m| m.n_questions);
        ensure!(
            other.n_documents == self.n_documents
                && questions(other, &theirs) == questions(self, &ours),
            "{}: {} documents and {:?} questions, where this evaluation has {} and {:?}: not the same stream",
            from.display(),
            other.n_documents,
            questions(other, &theirs),
            self.n_documents,
            questions(self, &ours)
        );
        for (name, row) in &other.methods {
            if name.starts_with(&theirs) {
                self.methods.insert(name.clone(), row.clone());
            }
        }
        self.beside.push((other.memory.clone(), from.to_path_buf()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(memory: &str, rows: &[&str], n_questions: usize) -> EvalReport {
        let row = serde_json::json!({
            "em": 0.1, "f1": 0.2, "prefix_em": 0.1, "n_questions": n_questions,
            "adapt_ms_per_doc": 1.0, "answer_ms_per_question": 2.0,
            "storage_bytes_per_doc": 3.0
        });
        let mut json = serde_json::json!({
            "memory": memory, "retention": [],
            "attention": {"gold_top1": 0.0, "gold_weight_mean": 0.0, "uniform_weight": 0.1},
            "n_documents": 10, "bank": "b", "predictions": "p.jsonl",
            "options": crate::EvalOptions::default(),
        });
        for r in rows {
            json[*r] = row.clone();
        }
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_other_memorys_rows_join_when_the_stream_is_the_same() {
        let mut span = report(
            "span memory",
            &["span_memory", "rag@1", "oracle_context"],
            30,
        );
        let paper = report("mac", &["mac", "mac+prior", "rag@1", "no_adapt"], 30);
        span.add_beside(&paper, Path::new("runs/default/eval"))
            .unwrap();
        let keys: Vec<&str> = span.methods.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["mac", "mac+prior", "oracle_context", "rag@1", "span_memory"]
        );
        assert_eq!(span.beside.len(), 1);
        let again = serde_json::to_string(&span).unwrap();
        let read: EvalReport = serde_json::from_str(&again).unwrap();
        assert_eq!(read.beside, span.beside);

        let other_stream = report("mac", &["mac"], 29);
        let e = span.add_beside(&other_stream, Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("not the same stream"), "{e}");
        let same_memory = report("span memory", &["span_memory"], 30);
        let e = span.add_beside(&same_memory, Path::new("y")).unwrap_err();
        assert!(e.to_string().contains("another memory"), "{e}");
    }
}
