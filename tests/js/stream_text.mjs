// Stream one reply through a gateway with the Vercel AI SDK and the OpenAI provider's
// default model (the Responses API: POST {base}/v1/responses).
//
//   node stream_text.mjs BASE_URL MODEL [PROMPT] [--tool]
//
// Prints one JSON line per event, on stdout:
//   {"type":"text-delta","text":"..."}               for every text delta
//   {"type":"tool-call",...} / {"type":"tool-result",...}  with --tool
//   {"type":"finish","finishReason":...,"rawFinishReason":...,"usage":{...},...}  last
// Exits 1 (the error on stderr) when the stream reports an error or anything throws.
// With --tool the model is offered one tool, get_weather({city}), which the SDK runs,
// and the run may take up to three steps (call, result, answer).

import { createOpenAI } from "@ai-sdk/openai";
import { stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const args = process.argv.slice(2);
const withTool = args.includes("--tool");
const [baseURL, model, prompt = "Say hello."] = args.filter((a) => a !== "--tool");
if (!baseURL || !model) {
  console.error("usage: node stream_text.mjs BASE_URL MODEL [PROMPT] [--tool]");
  process.exit(2);
}

const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const tools = {
  get_weather: tool({
    description: "The current weather in a city.",
    inputSchema: z.object({ city: z.string() }),
    execute: async ({ city }) => `sunny and 21 C in ${city}`,
  }),
};

async function main() {
  const openai = createOpenAI({ baseURL: baseURL.replace(/\/$/, "") + "/v1", apiKey: "unused" });
  let failure = null;
  const result = streamText({
    model: openai(model),
    prompt,
    maxRetries: 0,
    ...(withTool ? { tools, stopWhen: stepCountIs(3) } : {}),
    onError: ({ error }) => {
      failure ??= error;
    },
  });
  const warnings = [];
  const steps = [];
  let finish = null;
  for await (const part of result.fullStream) {
    switch (part.type) {
      case "text-delta":
        print({ type: "text-delta", text: part.text });
        break;
      case "tool-call":
        print({
          type: "tool-call",
          toolCallId: part.toolCallId,
          toolName: part.toolName,
          input: part.input,
        });
        break;
      case "tool-result":
        print({ type: "tool-result", toolCallId: part.toolCallId, output: part.output });
        break;
      case "tool-error":
        failure ??= part.error;
        break;
      case "start-step":
        warnings.push(...part.warnings);
        break;
      case "finish-step":
        steps.push({
          finishReason: part.finishReason,
          rawFinishReason: part.rawFinishReason,
          usage: part.usage,
          responseId: part.response.id,
          modelId: part.response.modelId,
        });
        break;
      case "finish":
        finish = part;
        break;
      case "error":
        failure ??= part.error;
        break;
      case "abort":
        failure ??= new Error(`stream aborted: ${part.reason ?? "no reason"}`);
        break;
      default:
        break;
    }
  }
  if (failure !== null) {
    throw failure;
  }
  if (finish === null) {
    throw new Error("the stream ended without a finish part");
  }
  print({
    type: "finish",
    finishReason: finish.finishReason,
    rawFinishReason: finish.rawFinishReason,
    usage: finish.totalUsage,
    text: await result.text,
    steps,
    warnings,
  });
}

main().then(
  () => process.exit(0),
  (error) => {
    const detail = error && typeof error === "object" ? { ...error } : {};
    console.error(String(error?.stack ?? error));
    for (const key of ["url", "statusCode", "responseBody", "cause"]) {
      if (detail[key] !== undefined) {
        console.error(`${key}: ${String(detail[key])}`);
      }
    }
    process.exit(1);
  },
);
