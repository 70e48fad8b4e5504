"""Provider names as the pipeline prices them, from the names instrumentations and gateways use.

OpenTelemetry's ``gen_ai.provider.name`` says ``aws.bedrock`` and ``gcp.vertex_ai``; LiteLLM's
``custom_llm_provider`` says ``vertex_ai``, ``together_ai``, ``hosted_vllm``. The usage event
names providers as the contract does (``anthropic``, ``openai``, ``google``, ``bedrock``,
``azure``, ``self-hosted``...), which are also names genai-prices' catalog matches. A name
this table does not know passes through lower-cased: a new provider is still metered, and
lands unpriced until a price exists for it.
"""

from __future__ import annotations

__all__ = ["canonical_provider"]

_ALIASES = {
    # OpenTelemetry GenAI semantic conventions (gen_ai.provider.name, gen_ai.system)
    "aws.bedrock": "bedrock",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "mistral_ai": "mistral",
    "x_ai": "xai",
    "ibm.watsonx.ai": "watsonx",
    # LiteLLM (custom_llm_provider)
    "bedrock_converse": "bedrock",
    "sagemaker": "bedrock",
    "gemini": "google",
    "vertex_ai": "google",
    "vertex_ai_beta": "google",
    "azure_ai": "azure",
    "azure_text": "azure",
    "text-completion-openai": "openai",
    "anthropic_text": "anthropic",
    "cohere_chat": "cohere",
    "codestral": "mistral",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
    "x-ai": "xai",
    "hosted_vllm": "self-hosted",
    "vllm": "self-hosted",
    "ollama": "self-hosted",
    "ollama_chat": "self-hosted",
    "lm_studio": "self-hosted",
    "llamafile": "self-hosted",
    # Other spellings seen in instrumentations
    "aws": "bedrock",
    "vertexai": "google",
    "google_genai": "google",
}


def canonical_provider(name: str) -> str:
    """The event's provider name for an instrumentation's or gateway's provider name."""
    key = name.strip().lower()
    return _ALIASES.get(key, key)
