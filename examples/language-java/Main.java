import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.StringTokenizer;

// The sum of n integers: n, then the integers, whitespace-separated.
public class Main {
    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        StringBuilder text = new StringBuilder();
        for (String line; (line = in.readLine()) != null; ) {
            text.append(line).append(' ');
        }
        StringTokenizer tokens = new StringTokenizer(text.toString());
        int n = Integer.parseInt(tokens.nextToken());
        long sum = 0;
        for (int i = 0; i < n; i++) {
            sum += Long.parseLong(tokens.nextToken());
        }
        System.out.println(sum);
    }
}
