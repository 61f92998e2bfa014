"""Talks to `mac serve` with the official `openai` Python package.

Usage: python openai_client.py BASE_URL QUESTION
Prints one JSON object: the chat answer (plain and streamed), the text
completion, the model list, the documents the server says it drew on, and
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
stream_mac = None
for chunk in client.chat.completions.create(
    model="mac", messages=[{"role": "user", "content": question}], stream=True
):
    if chunk.choices and chunk.choices[0].delta.content:
        streamed += chunk.choices[0].delta.content
    extra = chunk.model_extra or {}
    if "mac" in extra:
        stream_mac = extra["mac"]
completion = client.completions.create(model="mac", prompt=question)

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
            "models": [m.id for m in client.models.list().data],
            "unknown_model_status": unknown_model_status,
        }
    )
)
