// GETs each URL with java.net.http, then with HttpsURLConnection; prints "STATUS BODY".
import java.io.InputStream;
import java.net.URI;
import java.net.URL;
import java.net.HttpURLConnection;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;

public class Fetch {
    public static void main(String[] args) throws Exception {
        HttpClient client = HttpClient.newHttpClient();
        for (String url : args) {
            try {
                HttpResponse<String> r = client.send(HttpRequest.newBuilder(URI.create(url)).build(),
                                                     HttpResponse.BodyHandlers.ofString());
                System.out.println(r.statusCode() + " " + r.body().trim());
            } catch (Exception e) {
                System.out.println("0 " + e.toString().replace('\n', ' '));
            }
        }
        for (String url : args) {
            try {
                HttpURLConnection c = (HttpURLConnection) new URL(url).openConnection();
                int status = c.getResponseCode();
                try (InputStream in = status < 400 ? c.getInputStream() : c.getErrorStream()) {
                    System.out.println(status + " " + new String(in.readAllBytes()).trim());
                }
            } catch (Exception e) {
                System.out.println("0 " + e.toString().replace('\n', ' '));
            }
        }
    }
}
