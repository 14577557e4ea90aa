// An R2 bucket through its S3-compatible API, with the slice of the R2 binding's interface that
// lib/publish.mjs uses (list, put, delete). Requests are signed (SigV4) by aws4fetch.
//
// https://developers.cloudflare.com/r2/api/s3/api/ : endpoint https://<ACCOUNT_ID>.r2.cloudflarestorage.com,
// region "auto"; credentials are an R2 API token's Access Key ID and Secret Access Key.

import { AwsClient } from "aws4fetch";

const decodeXml = (text) => text.replace(/&(lt|gt|quot|apos|amp);/g,
  (_, name) => ({ lt: "<", gt: ">", quot: '"', apos: "'", amp: "&" })[name]);

function tag(xml, name) {
  const match = new RegExp(`<${name}>([\\s\\S]*?)</${name}>`).exec(xml);
  return match ? decodeXml(match[1]) : null;
}

const encodeKey = (key) => key.split("/").map(encodeURIComponent).join("/");

export class S3Bucket {
  /** endpoint: https://<account>.r2.cloudflarestorage.com (or any S3-compatible URL). */
  constructor({ endpoint, bucket, accessKeyId, secretAccessKey, fetch: fetchImpl }) {
    this.base = `${endpoint.replace(/\/+$/, "")}/${encodeURIComponent(bucket)}`;
    this.client = new AwsClient({ accessKeyId, secretAccessKey, service: "s3", region: "auto" });
    this.fetchImpl = fetchImpl;
  }

  async #request(url, init = {}) {
    const signed = await this.client.sign(url, init);
    const response = await (this.fetchImpl || fetch)(signed);
    if (!response.ok) {
      const text = await response.text();
      throw new Error(`${init.method || "GET"} ${url.replace(/\?.*/, "")}: HTTP ${response.status} `
        + `${tag(text, "Code") || ""} ${tag(text, "Message") || ""}`.trim());
    }
    return response;
  }

  async list({ cursor, limit = 1000, prefix } = {}) {
    const params = new URLSearchParams({ "list-type": "2", "max-keys": String(limit) });
    if (prefix) params.set("prefix", prefix);
    if (cursor) params.set("continuation-token", cursor);
    const xml = await (await this.#request(`${this.base}?${params}`)).text();
    const objects = [];
    for (const match of xml.matchAll(/<Contents>([\s\S]*?)<\/Contents>/g)) {
      objects.push({ key: tag(match[1], "Key"), size: Number(tag(match[1], "Size")),
        etag: (tag(match[1], "ETag") || "").replaceAll('"', "") });
    }
    const truncated = tag(xml, "IsTruncated") === "true";
    return { objects, truncated, cursor: truncated ? tag(xml, "NextContinuationToken") : undefined };
  }

  async put(key, data, { httpMetadata = {}, customMetadata = {} } = {}) {
    const headers = { "Content-Type": httpMetadata.contentType || "application/octet-stream" };
    for (const [name, value] of Object.entries(customMetadata)) headers[`x-amz-meta-${name}`] = value;
    await this.#request(`${this.base}/${encodeKey(key)}`, { method: "PUT", headers, body: data });
  }

  async delete(keys) {
    for (const key of Array.isArray(keys) ? keys : [keys]) {
      await this.#request(`${this.base}/${encodeKey(key)}`, { method: "DELETE" });
    }
  }
}
