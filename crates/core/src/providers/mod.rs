//! What one provider's API asks of the gateway beyond the translation of
//! its bodies: its address and paths, the header its key goes in, its
//! errors and the wait a refusal states. One file per provider.

pub mod gemini;
