//! Bidirectional RPC over getty-core sessions (protocol and peers land with issue 4).
