//! Error classes and the provider-aware classifier. (being written)
