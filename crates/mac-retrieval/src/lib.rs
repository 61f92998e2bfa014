//! # mac-retrieval — BM25 over the document stream
//!
//! The paper combines MAC with retrieval (§4.4): retrieve the top-k
//! documents for a question, then aggregate only their modulations. This
//! crate is the retriever: an in-memory [tantivy](https://docs.rs/tantivy)
//! index (BM25, tantivy's default tokenizer: lower-cased words) over
//! documents identified by their position in the stream.
//!
//! ```
//! let index = mac_retrieval::Bm25Index::build(&[
//!     "Ada Lovelace was born in London.",
//!     "Porto lies on the Douro river.",
//! ])?;
//! let hits = index.search("Where was Ada born?", 1)?;
//! assert_eq!(hits[0].document, 0);
//! # Ok::<(), mac_retrieval::RetrievalError>(())
//! ```

use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{Field, Schema, Value, INDEXED, STORED, TEXT};
use tantivy::{doc, Index, IndexReader, IndexWriter, TantivyDocument};

/// Retrieval failures.
#[derive(Debug, thiserror::Error)]
pub enum RetrievalError {
    /// tantivy reported an error.
    #[error("BM25 index: {0}")]
    Index(#[from] tantivy::TantivyError),
}

/// A BM25 index of documents `0..n`.
pub struct Bm25Index {
    index: Index,
    reader: IndexReader,
    writer: IndexWriter,
    body: Field,
    position: Field,
    len: usize,
}

/// One hit: the document's position in the stream and its BM25 score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Position of the document in the order it was added.
    pub document: usize,
    /// BM25 score.
    pub score: f32,
}

impl Bm25Index {
    /// An empty index.
    pub fn new() -> Result<Self, RetrievalError> {
        let mut schema = Schema::builder();
        let body = schema.add_text_field("body", TEXT);
        let position = schema.add_u64_field("position", INDEXED | STORED);
        let index = Index::create_in_ram(schema.build());
        let writer = index.writer(15_000_000)?;
        let reader = index.reader()?;
        Ok(Self {
            index,
            reader,
            writer,
            body,
            position,
            len: 0,
        })
    }

    /// Builds an index of `texts`; document `i` is `texts[i]`.
    pub fn build<S: AsRef<str>>(texts: &[S]) -> Result<Self, RetrievalError> {
        let mut index = Self::new()?;
        index.add(texts)?;
        Ok(index)
    }

    /// Appends documents (numbered after the existing ones) and makes them searchable.
    pub fn add<S: AsRef<str>>(&mut self, texts: &[S]) -> Result<(), RetrievalError> {
        for t in texts {
            self.writer.add_document(doc!(
                self.body => t.as_ref(),
                self.position => self.len as u64,
            ))?;
            self.len += 1;
        }
        self.writer.commit()?;
        self.reader.reload()?;
        Ok(())
    }

    /// Documents indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `k` best documents for `query`, best first. Query syntax is not
    /// interpreted strictly: punctuation and operators in a question never fail.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<Hit>, RetrievalError> {
        if k == 0 || self.len == 0 {
            return Ok(Vec::new());
        }
        let parser = QueryParser::for_index(&self.index, vec![self.body]);
        // Keep only words: the lenient parser still reads `AND`, `-` or `:`.
        let words: String = query
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { ' ' })
            .collect();
        let (q, _errors) = parser.parse_query_lenient(&words.to_lowercase());
        let searcher = self.reader.searcher();
        let top = searcher.search(&q, &TopDocs::with_limit(k).order_by_score())?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let d: TantivyDocument = searcher.doc(addr)?;
            if let Some(pos) = d.get_first(self.position).and_then(|v| v.as_u64()) {
                hits.push(Hit {
                    document: pos as usize,
                    score,
                });
            }
        }
        Ok(hits)
    }
}
