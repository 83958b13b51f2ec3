//! A session's messages, and what happens to them, on their way to the writer in order
//! (docs/media.md): a media message not recorded before is downloaded and stored first, then its
//! event and media row go to the writer as one write; what comes behind it waits, so a session's
//! events keep the page's order (a reaction never overtakes the photo it is about).

use std::sync::Arc;

use tokio::sync::mpsc;

use super::Media;
use crate::actors::session::Writer;
use crate::browser::PageHandle;
use crate::domain::SessionKey;
use crate::events::{MessageEvent, PageMedia, MESSAGE};

enum Job {
    Message {
        event: Box<MessageEvent>,
        media: Option<PageMedia>,
        /// The page of the browser that saw the message (`None`: it is gone).
        page: Option<PageHandle>,
    },
    /// Another event: type, dedupe key, data.
    Event(&'static str, String, serde_json::Value),
}

/// The sending side; the task ends when it is dropped.
pub struct Intake(mpsc::UnboundedSender<Job>);

impl Intake {
    pub fn spawn(media: Option<Arc<Media>>, writer: Writer, key: SessionKey) -> Intake {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                let (event, meta, page) = match job {
                    Job::Event(kind, dedupe, data) => {
                        writer.event(kind, &data, Some(dedupe));
                        continue;
                    }
                    Job::Message { event, media, page } => (*event, media, page),
                };
                let dedupe = event.dedupe();
                let (Some(meta), Some(media)) = (meta, &media) else {
                    writer.event(MESSAGE, &event, Some(dedupe));
                    continue;
                };
                // Gap filling reads messages recorded long ago: never downloaded twice.
                match media.store().has_event(&key, &dedupe).await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    // The writer's dedupe still holds; the download may be in vain.
                    Err(e) => log::warn!("{key} is {dedupe} recorded? {}", crate::chain(&e)),
                }
                let (row, pending) = media.fetch(&key, page.as_ref(), &event.id, &meta).await;
                let mut event = event;
                event.media = Some(Media::info(&row));
                writer.event_with(MESSAGE, &event, Some(dedupe), Some(row));
                // The content stays safe from the retention until its row is written.
                writer.flushed().await;
                drop(pending);
            }
        });
        Intake(tx)
    }

    /// A message the page reported; `page` is the page that saw it, for its media.
    pub fn message(&self, event: MessageEvent, media: Option<PageMedia>, page: Option<PageHandle>) {
        let _ = self.0.send(Job::Message {
            event: Box::new(event),
            media,
            page,
        });
    }

    /// Another event of the session, behind the messages before it.
    pub fn event(&self, kind: &'static str, dedupe: String, data: serde_json::Value) {
        let _ = self.0.send(Job::Event(kind, dedupe, data));
    }
}
