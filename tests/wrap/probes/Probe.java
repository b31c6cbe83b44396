// Connects to 127.0.0.1:PORT as NAME (SNI and hostname check); prints "ok NAME" or "refused NAME".
import java.net.Socket;
import javax.net.ssl.*;

public class Probe {
    public static void main(String[] args) throws Exception {
        SSLSocketFactory factory = (SSLSocketFactory) SSLSocketFactory.getDefault();
        for (int i = 0; i + 1 < args.length; i += 2) {
            String name = args[i];
            int port = Integer.parseInt(args[i + 1]);
            try (Socket raw = new Socket("127.0.0.1", port);
                 SSLSocket s = (SSLSocket) factory.createSocket(raw, name, port, true)) {
                SSLParameters p = s.getSSLParameters();
                p.setEndpointIdentificationAlgorithm("HTTPS");
                s.setSSLParameters(p);
                s.startHandshake();
                System.out.println("ok " + name);
            } catch (Exception e) {
                System.out.println("refused " + name);
            }
        }
    }
}
