/*
 * Test harness (tests/integration/serving/test_mms_decoder.py): feeds one MMS worker reply,
 * read from a file, to whichever ModelResponseDecoder is first on the classpath, split in two
 * at every offset and then one byte at a time, as Netty would deliver it from socket reads.
 * Prints one line per delivery: "ok <decoded reply>" or "fail <exception>".
 */
import com.amazonaws.ml.mms.util.codec.ModelResponseDecoder;
import com.amazonaws.ml.mms.util.messages.ModelWorkerResponse;
import com.amazonaws.ml.mms.util.messages.Predictions;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.Base64;
import java.util.TreeMap;

public final class DecoderSplits {

    private DecoderSplits() {}

    public static void main(String[] args) throws Exception {
        byte[] frame = Files.readAllBytes(Paths.get(args[0]));
        int limit = Integer.parseInt(args[1]);
        for (int split = 1; split < frame.length; split++) {
            System.out.println(deliver(frame, limit, split));
        }
        System.out.println(deliver(frame, limit, 1 - frame.length)); // byte by byte
    }

    /** split > 0: two pieces cut there; split <= 0: one byte per read. */
    private static String deliver(byte[] frame, int limit, int split) {
        EmbeddedChannel channel = new EmbeddedChannel(new ModelResponseDecoder(limit));
        try {
            if (split > 0) {
                channel.writeInbound(Unpooled.wrappedBuffer(frame, 0, split));
                channel.writeInbound(Unpooled.wrappedBuffer(frame, split, frame.length - split));
            } else {
                for (int i = 0; i < frame.length; i++) {
                    channel.writeInbound(Unpooled.wrappedBuffer(frame, i, 1));
                }
            }
            ModelWorkerResponse reply = channel.readInbound();
            if (reply == null) {
                return "fail nothing decoded";
            }
            if (channel.readInbound() != null) {
                return "fail more than one reply decoded";
            }
            return "ok " + describe(reply);
        } catch (RuntimeException err) {
            Throwable cause = err.getCause() != null ? err.getCause() : err;
            return "fail " + cause.getClass().getSimpleName() + ": " + cause.getMessage();
        } finally {
            try {
                channel.finishAndReleaseAll();
            } catch (RuntimeException ignored) {
                // a decoder that already failed fails again on the bytes left at close
            }
        }
    }

    private static String describe(ModelWorkerResponse reply) {
        StringBuilder out = new StringBuilder();
        out.append(reply.getCode()).append(' ').append(reply.getMessage());
        for (Predictions p : reply.getPredictions()) {
            out.append(" | ")
                    .append(p.getRequestId()).append(' ')
                    .append(p.getContentType()).append(' ')
                    .append(p.getStatusCode()).append(' ')
                    .append(p.getReasonPhrase()).append(' ')
                    .append(new TreeMap<>(p.getHeaders())).append(' ')
                    .append(Base64.getEncoder().encodeToString(p.getResp()));
        }
        return out.toString();
    }
}
