// The official openai Node SDK against the gateway, driven by tests/e2e/test_compat_node.py.
//
// Usage: node openai_client.mjs '<JSON>' where JSON is {"calls": [CALL, ...]} and each CALL is
// {"id", "baseURL", "apiKey", "model", "stream", "includeUsage", "maxRetries"}.
// The calls run one after the other; the script prints one JSON object,
// {"results": [RESULT, ...]}, and exits 0 whatever the calls did. A RESULT says what the SDK
// gave: the content, the chunks' roles, ids, finish reasons and usage, the raw bytes of the
// response (recorded by a fetch that tees the body, for the Python SSE checker), or the error
// the SDK raised, by class name.
import OpenAI from 'openai';

const TIMEOUT_MS = 15_000;

function errorOf(error) {
  return {
    name: error?.constructor?.name ?? typeof error,
    isAPIError: error instanceof OpenAI.APIError,
    status: error?.status ?? null,
    code: error?.code ?? null,
    type: error?.type ?? null,
    message: String(error?.message ?? error),
    retryAfter: error?.headers?.get?.('retry-after') ?? null,
  };
}

function recordingFetch(sink) {
  return async (url, init) => {
    const response = await fetch(url, init);
    if (!response.body) return response;
    const [forClient, forRecord] = response.body.tee();
    sink.done = (async () => {
      const decoder = new TextDecoder();
      const reader = forRecord.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        sink.raw += decoder.decode(value, { stream: true });
      }
    })();
    return new Response(forClient, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
  };
}

async function run(call) {
  const sink = { raw: '', done: Promise.resolve() };
  const client = new OpenAI({
    baseURL: call.baseURL,
    apiKey: call.apiKey,
    maxRetries: call.maxRetries ?? 0,
    timeout: TIMEOUT_MS,
    fetch: recordingFetch(sink),
  });
  const request = {
    model: call.model,
    messages: [{ role: 'user', content: 'tell me' }],
  };
  const result = { id: call.id, ok: false, content: '', chunks: 0, roles: [], ids: [],
    finishReasons: [], usage: null, object: null, error: null, raw: '' };
  try {
    if (call.stream) {
      request.stream = true;
      if (call.includeUsage) request.stream_options = { include_usage: true };
      const stream = await client.chat.completions.create(request);
      for await (const chunk of stream) {
        result.chunks += 1;
        result.ids.push(chunk.id);
        result.object = chunk.object;
        if (chunk.usage) result.usage = chunk.usage;
        for (const choice of chunk.choices) {
          if (choice.delta?.role) result.roles.push(choice.delta.role);
          if (choice.delta?.content) result.content += choice.delta.content;
          if (choice.finish_reason) result.finishReasons.push(choice.finish_reason);
        }
      }
    } else {
      const completion = await client.chat.completions.create(request);
      result.object = completion.object;
      result.ids.push(completion.id);
      result.content = completion.choices[0]?.message?.content ?? '';
      result.roles.push(completion.choices[0]?.message?.role);
      result.finishReasons.push(completion.choices[0]?.finish_reason);
      result.usage = completion.usage ?? null;
    }
    result.ok = true;
  } catch (error) {
    result.error = errorOf(error);
  }
  await sink.done.catch(() => {});
  result.raw = sink.raw;
  return result;
}

const { calls } = JSON.parse(process.argv[2]);
const results = [];
for (const call of calls) {
  results.push(await run(call));
}
process.stdout.write(JSON.stringify({ results }) + '\n');
