//! In-memory reference backend: the simplest complete implementation of the API.
