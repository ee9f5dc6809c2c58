package bench

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"
)

// ColdDepth is the depth of the chain a fresh worker runs a step on
// (coldDepthQuick with --quick).
const (
	ColdDepth      = 100
	coldDepthQuick = 10
)

// bucketLister lists the layer objects the cluster's nodes store under
// their s3://bucket/prefix (the layer store's layout: prefix/layers/ID).
type bucketLister struct {
	client         *s3.Client
	bucket, prefix string
}

func newBucketLister(ctx context.Context, blobs, endpoint string) (*bucketLister, error) {
	u, err := url.Parse(blobs)
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return nil, fmt.Errorf("cluster blobs %q: want s3://bucket/prefix", blobs)
	}
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("cluster blobs: AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	c := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = true
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	})
	prefix := strings.Trim(u.Path, "/")
	if prefix != "" {
		prefix += "/"
	}
	return &bucketLister{client: c, bucket: u.Host, prefix: prefix + "layers/"}, nil
}

// objects returns the layer objects' sizes by key.
func (l *bucketLister) objects(ctx context.Context) (map[string]int64, error) {
	out := map[string]int64{}
	p := s3.NewListObjectsV2Paginator(l.client, &s3.ListObjectsV2Input{Bucket: aws.String(l.bucket), Prefix: aws.String(l.prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list the cluster's layers: %w", err)
		}
		for _, o := range page.Contents {
			out[aws.ToString(o.Key)] = aws.ToInt64(o.Size)
		}
	}
	return out, nil
}

// uploaded summarises the objects in after and not in before, stored by
// steps chained steps whose layers were layerBytes on disk.
func uploaded(before, after map[string]int64, steps int, layerBytes []int64) *ClusterUpload {
	var sizes []int64
	for k, n := range after {
		if _, ok := before[k]; !ok {
			sizes = append(sizes, n)
		}
	}
	u := &ClusterUpload{Objects: len(sizes), BytesP50: median(sizes), LayerBytes: median(layerBytes)}
	// Step i appends "i\n" to /root/log: at the median step the file holds
	// the lines of the warm-up (-1) and of steps 0..steps/2.
	u.ChangeBytes = int64(len("-1\n"))
	for i := 0; i <= steps/2; i++ {
		u.ChangeBytes += int64(len(fmt.Sprintf("%d\n", i)))
	}
	return u
}

func median(xs []int64) int64 {
	if len(xs) == 0 {
		return 0
	}
	xs = slices.Clone(xs)
	slices.Sort(xs)
	return xs[len(xs)/2]
}

// claimWaits reads, from the database, how long each of ops waited
// between its insert and its claim.
func claimWaits(ctx context.Context, dsn string, ops []string) (Dist, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return Dist{}, fmt.Errorf("read claim times: %w", err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT (extract(epoch FROM started_at - created_at) * 1e6)::bigint FROM operations WHERE uuid = ANY($1)`, ops)
	if err != nil {
		return Dist{}, fmt.Errorf("read claim times: %w", err)
	}
	us, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return Dist{}, fmt.Errorf("read claim times: %w", err)
	}
	ds := make([]time.Duration, len(us))
	for i, u := range us {
		ds[i] = time.Duration(u) * time.Microsecond
	}
	return dist(ds), nil
}

// clusterCold extends the chain at tip (depth steps) to ColdDepth on the
// one worker in nodes, stops that worker, and runs a step on the tip with
// a fresh worker whose cache is empty, then one more on its result, with
// a new fresh worker per trial.
func (b *bench) clusterCold(ctx context.Context, api *daemonConn, nodes *[]*daemonConn, rt, tip string, depth int) error {
	start := time.Now()
	want := ColdDepth
	if b.o.Quick {
		want = coldDepthQuick
	}
	b.progress("cluster: building a %d-step chain on one worker", want)
	for ; depth < want; depth++ {
		s, err := b.runAPI(ctx, api, spawn{runtime: rt, image: tip, shell: fmt.Sprintf("echo %d >> /root/log", depth)})
		if err != nil {
			return err
		}
		tip = s.image
	}
	cold := &ClusterCold{Depth: depth, BuildSeconds: round3(time.Since(start).Seconds())}
	// The chain's maker stops; a fresh worker (empty cache) joins.
	maker := (*nodes)[len(*nodes)-1]
	if err := maker.stop(); err != nil {
		return err
	}
	*nodes = (*nodes)[:len(*nodes)-1]
	// Until the maker is presumed dead, its images' steps wait for it
	// (the queue's locality wait); that wait is not the fetch.
	if err := awaitDead(ctx, b.o.Cluster.DB, maker.name); err != nil {
		return err
	}
	cold.Trials = 3
	if b.o.Quick {
		cold.Trials = 1
	}
	var steps, warms, setups, warmSetups []time.Duration
	for i := range cold.Trials {
		b.progress("cluster: a step on the tip by fresh worker %d", i+1)
		fresh, err := b.startDaemon(ctx, fmt.Sprintf("cluster-cold%d", i+1), false)
		if err != nil {
			return err
		}
		*nodes = append(*nodes, fresh)
		s, err := b.runAPI(ctx, api, spawn{runtime: rt, image: tip, shell: "echo cold >> /root/log"})
		if err != nil {
			return err
		}
		w, err := b.runAPI(ctx, api, spawn{runtime: rt, image: s.image, shell: "echo warm >> /root/log"})
		if err != nil {
			return err
		}
		sp, err := b.phases(ctx, api, s)
		if err != nil {
			return err
		}
		wp, err := b.phases(ctx, api, w)
		if err != nil {
			return err
		}
		steps, warms = append(steps, s.wall), append(warms, w.wall)
		setups, warmSetups = append(setups, sp.setup), append(warmSetups, wp.setup)
		// Stopped, so that the next fresh worker takes the next step.
		if err := fresh.stop(); err != nil {
			return err
		}
		*nodes = (*nodes)[:len(*nodes)-1]
	}
	cold.StepMs, cold.WarmMs = dist(steps).P50Ms, dist(warms).P50Ms
	cold.SetupMs, cold.WarmSetupMs = dist(setups).P50Ms, dist(warmSetups).P50Ms
	if cold.StepMs > 0 {
		cold.FetchShare = round3(max(0, (cold.SetupMs-cold.WarmSetupMs)/cold.StepMs))
	}
	b.rep.Cluster.Cold = cold
	return nil
}

// awaitDead waits until worker id's heartbeat is older than a lease (the
// queue's default: the benchmark's nodes keep it).
func awaitDead(ctx context.Context, dsn, id string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var alive bool
		err := conn.QueryRow(ctx, `SELECT heartbeat_at > clock_timestamp() - interval '15 seconds' FROM workers WHERE id=$1`, id).Scan(&alive)
		if err == pgx.ErrNoRows || (err == nil && !alive) {
			return nil
		}
		if err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("worker %s still heartbeats after it stopped", id)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
