"""Talks to `mac serve` with the official `openai` Python package.

Usage: python openai_client.py BASE_URL QUESTION
Prints one JSON object: the chat answer (plain and streamed, with the
number of streamed pieces), the text completion (plain and streamed), an
answer of at most one token, two sampled answers with the same seed, the
model list, the documents the server says it drew on, and
the status of a request for a model the server does not serve.
"""

import json
import sys

import openai

base_url, question = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)

chat = client.chat.completions.create(
    model="mac",
    messages=[
        {"role": "system", "content": "Answer from memory."},
        {"role": "user", "content": question},
    ],
)
streamed = ""
stream_pieces = 0
stream_mac = None
for chunk in client.chat.completions.create(
    model="mac", messages=[{"role": "user", "content": question}], stream=True
):
    if chunk.choices and chunk.choices[0].delta.content:
        streamed += chunk.choices[0].delta.content
        stream_pieces += 1
    extra = chunk.model_extra or {}
    if "mac" in extra:
        stream_mac = extra["mac"]
completion = client.completions.create(model="mac", prompt=question)
streamed_completion = "".join(
    c.choices[0].text
    for c in client.completions.create(model="mac", prompt=question, stream=True)
    if c.choices
)
one_token = client.chat.completions.create(
    model="mac", messages=[{"role": "user", "content": question}], max_tokens=1
)
sampled = [
    client.chat.completions.create(
        model="mac",
        messages=[{"role": "user", "content": question}],
        temperature=1.0,
        top_p=0.9,
        seed=11,
        max_tokens=8,
    ).choices[0].message.content
    for _ in range(2)
]

try:
    client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": question}]
    )
    unknown_model_status = 200
except openai.APIStatusError as e:
    unknown_model_status = e.status_code

print(
    json.dumps(
        {
            "chat": chat.choices[0].message.content,
            "finish_reason": chat.choices[0].finish_reason,
            "usage_total": chat.usage.total_tokens,
            "documents": (chat.model_extra or {})["mac"]["documents"],
            "streamed": streamed,
            "stream_documents": stream_mac["documents"] if stream_mac else None,
            "completion": completion.choices[0].text,
            "streamed_completion": streamed_completion,
            "stream_pieces": stream_pieces,
            "one_token": one_token.choices[0].message.content,
            "one_token_finish_reason": one_token.choices[0].finish_reason,
            "one_token_usage": one_token.usage.completion_tokens,
            "sampled": sampled,
            "models": [m.id for m in client.models.list().data],
            "unknown_model_status": unknown_model_status,
        }
    )
)
