"""Provider adapters: each turns the gateway's request into one provider call and back."""
