// A two-step tool loop with the Vercel AI SDK's OpenAI-compatible provider against the gateway.
//
// Usage: node ai_sdk_tool_loop.mjs BASE_URL MODEL
// BASE_URL is the gateway's /v1 URL. The script streams (streamText), lets the SDK run the
// get_weather tool it defines, and prints one JSON object describing what happened, for the
// Python test to assert on. It never throws on a model error: errors are printed in "errors".
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { stepCountIs, streamText, tool } from 'ai';
import { z } from 'zod';

const [baseURL, modelId] = process.argv.slice(2);
const provider = createOpenAICompatible({
  name: 'straico-gateway',
  baseURL,
  apiKey: 'unused',
  includeUsage: true,
});

const executed = [];
const errors = [];
const result = streamText({
  model: provider.chatModel(modelId),
  prompt: 'What is the weather in Paris?',
  tools: {
    get_weather: tool({
      description: 'The current weather in a city',
      inputSchema: z.object({ city: z.string() }),
      execute: async ({ city }) => {
        executed.push(city);
        return { city, temperature: 21, sky: 'sunny' };
      },
    }),
  },
  stopWhen: stepCountIs(4),
  maxRetries: 0,
  abortSignal: AbortSignal.timeout(20_000),
  onError: ({ error }) => errors.push(String(error)),
});

const partTypes = new Set();
for await (const part of result.fullStream) {
  partTypes.add(part.type);
}
const steps = await result.steps;
console.log(
  JSON.stringify({
    text: await result.text,
    finishReason: await result.finishReason,
    executed,
    errors,
    partTypes: [...partTypes].sort(),
    steps: steps.map((step) => ({
      finishReason: step.finishReason,
      text: step.text,
      toolCalls: step.toolCalls.map((c) => ({ id: c.toolCallId, name: c.toolName, input: c.input })),
      toolResults: step.toolResults.map((r) => ({ id: r.toolCallId, name: r.toolName, output: r.output })),
    })),
  }),
);
