"""The forms an answer takes inside the gateway, and what the gateway reads of each: its usage,
its text, whether it is whole, a stream's first token and its end. A request keeps the form its
caller's API speaks (an OpenAI chat.completion, an Anthropic message) from the chain to the
client, so that nothing a provider sent is lost in translation; money, the cache and the relay
read it only through its Form."""
