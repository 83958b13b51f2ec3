//! Diesel schema. Written by hand (not `diesel print-schema`): the two backends differ in column
//! types and an adopted PostgreSQL table may keep nullable key columns.

diesel::table! {
    /// One row per session key. `userId`, `slot`, `isConnected` and `connectedNumber` are the
    /// platform's columns (the bot backend reads them); the rest belong to the daemon.
    ///
    /// `userId` and `slot` are `Nullable` because a `whatsapp_bots` table adopted on PostgreSQL may
    /// have had nullable columns (and NULL values) before the daemon: such rows are skipped, not
    /// fatal. The daemon itself always writes both.
    whatsapp_bots (user_id, slot) {
        #[sql_name = "userId"]
        user_id -> Nullable<Text>,
        slot -> Nullable<Integer>,
        #[sql_name = "isConnected"]
        is_connected -> Bool,
        #[sql_name = "connectedNumber"]
        connected_number -> Nullable<Text>,
        state -> Text,
        intent -> Text,
        restarts -> Integer,
        last_error -> Nullable<Text>,
        created_ms -> BigInt,
        updated_ms -> BigInt,
    }
}

diesel::table! {
    /// Audit trail per session key (started, qr, connected, crashed, …, and by whom).
    session_events (id) {
        id -> BigInt,
        #[sql_name = "userId"]
        user_id -> Text,
        slot -> Integer,
        at_ms -> BigInt,
        kind -> Text,
        detail -> Nullable<Text>,
        actor -> Text,
    }
}

diesel::table! {
    /// Messages, acks and state changes of every session: written before anything else happens
    /// to them, then streamed and delivered to webhooks (the outbox).
    outbox_events (id) {
        id -> BigInt,
        #[sql_name = "userId"]
        user_id -> Text,
        slot -> Integer,
        #[sql_name = "type"]
        kind -> Text,
        payload -> Text,
        created_ms -> BigInt,
        uid -> Text,
        dedupe -> Nullable<Text>,
    }
}

diesel::table! {
    /// One webhook per user (the service webhook is configuration, not a row).
    webhooks (user_id) {
        #[sql_name = "userId"]
        user_id -> Text,
        url -> Text,
        events -> Text,
        secret -> Text,
        disabled_reason -> Nullable<Text>,
        created_ms -> BigInt,
        updated_ms -> BigInt,
    }
}

diesel::table! {
    /// One delivery of one event to one target.
    deliveries (id) {
        id -> BigInt,
        event_id -> BigInt,
        target -> Text,
        #[sql_name = "userId"]
        user_id -> Text,
        slot -> Integer,
        status -> Text,
        attempts -> Integer,
        next_attempt_ms -> BigInt,
        last_status -> Nullable<Integer>,
        last_error -> Nullable<Text>,
        created_ms -> BigInt,
        updated_ms -> BigInt,
    }
}

diesel::table! {
    /// Idempotency keys of sent messages and the first send's answer.
    sent_messages (user_id, slot, idem_key) {
        #[sql_name = "userId"]
        user_id -> Text,
        slot -> Integer,
        idem_key -> Text,
        result -> Nullable<Text>,
        created_ms -> BigInt,
        message_id -> Nullable<Text>,
        unknown_ms -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// One row per incoming media message (docs/media.md); the bytes are stored once per content.
    media (id) {
        id -> Text,
        #[sql_name = "userId"]
        user_id -> Text,
        slot -> Integer,
        message_id -> Text,
        event_id -> Nullable<BigInt>,
        state -> Text,
        sha256 -> Nullable<Text>,
        size -> Nullable<BigInt>,
        mimetype -> Nullable<Text>,
        filename -> Nullable<Text>,
        error -> Nullable<Text>,
        created_ms -> BigInt,
        updated_ms -> BigInt,
    }
}

diesel::table! {
    /// Media bytes in cluster mode, in parts (one node keeps them in files).
    media_blobs (sha256, part) {
        sha256 -> Text,
        part -> Integer,
        data -> Binary,
        stored_ms -> BigInt,
    }
}

diesel::table! {
    /// The daemon's own secrets (the key of media links), shared by every node.
    daemon_secrets (name) {
        name -> Text,
        value -> Text,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    media,
    media_blobs,
    daemon_secrets,
    whatsapp_bots,
    session_events,
    outbox_events,
    webhooks,
    deliveries,
    sent_messages
);
