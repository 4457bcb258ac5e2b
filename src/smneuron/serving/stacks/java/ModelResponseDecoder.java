/*
 * smneuron: a replacement, loaded ahead of MMS 1.1.11's own class of the same name, for the
 * decoder of the replies that MMS's Python workers send to its Java frontend.
 *
 * Why: the decoder shipped in model-server.jar parses a reply as bytes arrive and checks for a
 * partial frame only at some fields. When a reply arrives in pieces (a batch of answers is
 * larger than one socket read) and a piece ends inside a prediction's status code or its
 * headers map, the shipped decoder throws CorruptedFrameException ("Message size exceed
 * limit: 16", 16 = the length of "application/json") or IndexOutOfBoundsException instead of
 * waiting for the rest; the frontend then drops the worker and every request in its batch
 * fails with a 5xx while it restarts. Upstream is archived, so the fix lives here.
 *
 * This decoder reads the same wire format (all integers big-endian):
 *   int code, string message,
 *   then per prediction until an int -1: string requestId, string contentType, int status,
 *   string reasonPhrase, int headerCount, headerCount x (string key, string value),
 *   bytes body;
 *   string and bytes = int length followed by that many bytes.
 * Every read first checks that its bytes have arrived; when any have not, nothing is
 * consumed and Netty calls again with more bytes. Lengths that are negative or above the
 * configured response limit are a corrupt frame, as before.
 */
package com.amazonaws.ml.mms.util.codec;

import com.amazonaws.ml.mms.util.messages.ModelWorkerResponse;
import com.amazonaws.ml.mms.util.messages.Predictions;
import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.ByteToMessageDecoder;
import io.netty.handler.codec.CorruptedFrameException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

public class ModelResponseDecoder extends ByteToMessageDecoder {

    private static final int END_OF_PREDICTIONS = -1;

    /** Thrown when the frame is not complete yet; preallocated, without a stack trace. */
    private static final class Partial extends RuntimeException {
        private static final long serialVersionUID = 1L;

        Partial() {
            super("partial frame", null, false, false);
        }
    }

    private static final Partial PARTIAL = new Partial();

    private final int maxBufferSize;

    public ModelResponseDecoder(int maxBufferSize) {
        this.maxBufferSize = maxBufferSize;
    }

    @Override
    protected void decode(ChannelHandlerContext ctx, ByteBuf in, List<Object> out) {
        int start = in.readerIndex();
        try {
            out.add(readResponse(in));
        } catch (Partial partial) {
            in.readerIndex(start); // wait for more bytes, consume nothing
        }
    }

    private ModelWorkerResponse readResponse(ByteBuf in) {
        ModelWorkerResponse response = new ModelWorkerResponse();
        response.setCode(readInt(in));
        response.setMessage(readString(in));
        List<Predictions> predictions = new ArrayList<>();
        while (true) {
            int length = readInt(in);
            if (length == END_OF_PREDICTIONS) {
                break;
            }
            Predictions prediction = new Predictions();
            prediction.setRequestId(new String(readBody(in, length), StandardCharsets.UTF_8));
            prediction.setContentType(readString(in));
            prediction.setStatusCode(readInt(in));
            prediction.setReasonPhrase(readString(in));
            prediction.setHeaders(readHeaders(in));
            prediction.setResp(readBody(in, readInt(in)));
            predictions.add(prediction);
        }
        response.setPredictions(predictions);
        return response;
    }

    private Map<String, String> readHeaders(ByteBuf in) {
        int count = readInt(in);
        if (count < 0) {
            throw new CorruptedFrameException("Invalid header count: " + count);
        }
        Map<String, String> headers = new HashMap<>();
        for (int i = 0; i < count; i++) {
            String key = readString(in);
            headers.put(key, readString(in));
        }
        return headers;
    }

    private static int readInt(ByteBuf in) {
        if (in.readableBytes() < Integer.BYTES) {
            throw PARTIAL;
        }
        return in.readInt();
    }

    private String readString(ByteBuf in) {
        return new String(readBody(in, readInt(in)), StandardCharsets.UTF_8);
    }

    /** The {@code length} bytes after a length already read, once they have all arrived. */
    private byte[] readBody(ByteBuf in, int length) {
        if (length < 0 || length > maxBufferSize) {
            throw new CorruptedFrameException("Message size exceed limit: " + length);
        }
        if (in.readableBytes() < length) {
            throw PARTIAL;
        }
        byte[] bytes = new byte[length];
        in.readBytes(bytes);
        return bytes;
    }
}
